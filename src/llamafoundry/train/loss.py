"""The pretraining objective: next-token cross-entropy, in float32 even under bf16 autocast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [B, L + 1] (inputs: the first L tokens, targets: the last L)."""
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
