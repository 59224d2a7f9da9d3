"""The paper's optimisation recipe (Sec. 2.3).

AdamW (beta1 0.9, beta2 0.95, weight decay 0.1), a cosine learning-rate schedule whose final value is
10% of the peak, 2,000 warmup steps, gradient clipping at 1.0. Weight decay applies to the matrices
only: norm gains (the model's only 1-D parameters; there are no biases) are not decayed, as is the
common practice (nanoGPT's configure_optimizers, torchtitan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PAPER_WARMUP_STEPS = 2000


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3.0e-4  # Table 2: 3.0e-4 for 7B/13B, 1.5e-4 for 33B/65B
    min_lr_ratio: float = 0.1  # cosine ends at 10% of the peak
    warmup_steps: int | None = None  # None: the paper's 2,000, scaled down for short runs (see warmup_for)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0


def warmup_for(total_steps: int, warmup_steps: int | None = None) -> int:
    """The paper's 2,000 warmup steps, or 5% of the run for runs shorter than 40,000 steps."""
    if warmup_steps is not None:
        return warmup_steps
    return max(1, min(PAPER_WARMUP_STEPS, round(0.05 * total_steps)))


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to `peak`, then cosine down to
    `min_lr_ratio * peak` at the last step."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = min_lr_ratio * peak
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: 2-D weights decayed, everything else (norm gains) not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    device = next(model.parameters()).device
    # The fused kernel is one launch per step on CUDA; on CPU it also saves a pass over the parameters.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=fused,
    )


class Schedule:
    """The learning rate of each optimizer step: a pure function of the step, so resuming needs no state."""

    def __init__(self, cfg: OptimConfig, total_steps: int) -> None:
        self.cfg, self.total_steps = cfg, total_steps
        self.warmup_steps = warmup_for(total_steps, cfg.warmup_steps)

    def __call__(self, step: int) -> float:
        return lr_at(step, self.cfg.lr, self.total_steps, self.warmup_steps, self.cfg.min_lr_ratio)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set the learning rate of every parameter group for optimizer step `step`; return it."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to `max_norm` (1.0 in the paper); return the norm before clipping.

    With sharded (DTensor) parameters the norm is reduced across ranks and returned whole.
    """
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
