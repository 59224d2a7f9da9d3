"""The training objective: next-token cross-entropy, in float32 even under bf16 autocast.

Pretraining batches are windows [B, L + 1]: every next token is a target. A finetune's batches are
[B, 2, L + 1], its tokens and its targets, the targets IGNORE_INDEX where no loss is taken (prompt and
padding: Sec. 4's loss on the responses only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # F.cross_entropy's default: a target position that adds no loss


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of windows [B, L + 1] (inputs: the first L
    tokens, targets: the last L) or of [B, 2, L + 1] (tokens, targets with IGNORE_INDEX)."""
    tokens, targets = (batch[:, 0], batch[:, 1]) if batch.dim() == 3 else (batch, batch)
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), targets[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def loss_weights(batch: torch.Tensor, mean_over_ranks=lambda total: total) -> torch.Tensor:
    """Each micro-batch's share of a step's loss, for a step [accum, ...] of micro-batches: its share of
    the step's target tokens, so that the step's loss is the mean over all of them (micro-batches of a
    finetune hold different numbers of response tokens). Across data-parallel ranks, whose gradients are
    averaged, the share is of the ranks' mean count (`mean_over_ranks`), so that every rank's tokens
    weigh the same."""
    if batch.dim() == 3:  # windows: every micro-batch, on every rank, has the same number of targets
        return torch.full((len(batch),), 1 / len(batch))
    counts = (batch[:, :, 1, 1:] != IGNORE_INDEX).sum(dim=(1, 2)).double()
    return (counts / float(mean_over_ranks(counts.sum()))).float()
