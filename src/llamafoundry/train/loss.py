"""The training objective: next-token cross-entropy, in float32 even under bf16 autocast.

Pretraining batches are windows [B, L + 1]: every next token is a target. A finetune's batches are
[B, 2, L + 1], its tokens and its targets, the targets IGNORE_INDEX where no loss is taken (prompt and
padding: Sec. 4's loss on the responses only).

The output projection and the cross-entropy run fused, a chunk of tokens at a time
(`linear_cross_entropy`, as Liger's and torchtune's chunked losses do): each chunk's logits, loss and
gradients are computed in the forward, so the [tokens x vocab] logits never exist whole. Unfused, a
batch of 4,096 tokens and 32,000 pieces holds 0.5 GB of float32 logits, and the loss passes over them
about six times (the float32 copy, log-softmax, its backward, the one-hot gradient, the cast back to
bf16); fused, a chunk's gradient is one in-place exp (the 1/count scale folded into the exponent) and
a scatter. The matmuls are the unfused ones, in the same dtype. Measured on the benchmark's output
layer (4,096 x 512 -> 32,000, bf16 autocast, forward + backward, interleaved, best of 4, on a shared
2-core machine): chunks of 1,024 tokens 1.16x the unfused loss, 256 tokens 0.94x, 128 tokens 0.58x
(smaller matmuls lose more than the cache gains).

Under torch.compile (`parallel.compile`), inductor fuses those passes into the output matmul's graph
itself, so the compiled loss stays unfused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llamafoundry.model import Transformer

IGNORE_INDEX = -100  # F.cross_entropy's default: a target position that adds no loss
CHUNK_TOKENS = 1024  # tokens per chunk of linear_cross_entropy (measured: see above)


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens of windows [B, L + 1] (inputs: the first L
    tokens, targets: the last L) or of [B, 2, L + 1] (tokens, targets with IGNORE_INDEX)."""
    tokens, targets = (batch[:, 0], batch[:, 1]) if batch.dim() == 3 else (batch, batch)
    inputs, targets = tokens[:, :-1], targets[:, 1:].flatten()
    if _plain_output(model) and not torch.compiler.is_compiling():
        return linear_cross_entropy(model.hidden(inputs).flatten(0, 1), model.output.weight, targets)
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=IGNORE_INDEX)


def _plain_output(model: nn.Module) -> bool:
    """Whether the loss may read the model's output weight itself: a whole (not sharded over ranks)
    nn.Linear. An adapted output (LoRA) or a sharded one runs its own forward."""
    from torch.distributed.tensor import DTensor

    output = getattr(model, "output", None)
    return (
        isinstance(model, Transformer)
        and type(output) is nn.Linear
        and not isinstance(output.weight, DTensor)
    )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK_TOKENS
) -> torch.Tensor:
    """`F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=IGNORE_INDEX)` for hidden
    [N, D], weight [V, D], targets [N], without the [N, V] logits: `chunk` tokens at a time. Under
    autocast the matmuls run in its dtype, as F.linear's would."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk)
    dtype = _compute_dtype(hidden)
    h, w = hidden.to(dtype), weight.to(dtype)
    valid = targets != IGNORE_INDEX
    total = sum(
        _chunk_loss(h[s : s + chunk] @ w.T, targets[s : s + chunk], valid[s : s + chunk])[0]
        for s in range(0, len(h), chunk)
    )
    return total / valid.sum()


class _LinearCrossEntropy(torch.autograd.Function):
    """The fused loss; its forward also computes the gradients, which the backward only scales."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        dtype = _compute_dtype(hidden)
        want_h, want_w = ctx.needs_input_grad[:2]
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            valid = targets != IGNORE_INDEX
            count = valid.sum()
            # d(mean loss)/d(logits) of a token: (softmax - one-hot) / count, zero where ignored. An
            # all-ignored batch has a NaN loss and zero gradients, as F.cross_entropy's.
            scale = valid / count.clamp(min=1)
            total = torch.zeros((), device=hidden.device)
            grad_h = torch.empty_like(h) if want_h else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
            for s in range(0, len(h), chunk):
                hc = h[s : s + chunk]
                loss, grad = _chunk_loss(hc @ w.T, targets[s : s + chunk], valid[s : s + chunk])
                grad = _chunk_grad(grad, scale[s : s + chunk]).to(dtype)
                total += loss
                if want_h:
                    torch.mm(grad, w, out=grad_h[s : s + chunk])
                if want_w:
                    grad_w += grad.T @ hc  # each chunk's product rounded once, summed in float32
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total / count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (
            None if grad_h is None else grad_h.to(h_dtype) * grad_loss,
            None if grad_w is None else (grad_w * grad_loss).to(w_dtype),
            None,
            None,
        )


def _chunk_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The summed loss of a chunk's logits [n, V] (any dtype) in float32, and what `_chunk_grad` needs:
    the float32 logits (to be overwritten), their log-sum-exp and the targets (ignored ones as 0)."""
    logits = logits.float()
    lse = logits.logsumexp(-1, keepdim=True)
    safe = targets.masked_fill(~valid, 0).unsqueeze(1)
    picked = logits.gather(1, safe)
    return ((lse - picked).squeeze(1) * valid).sum(), (logits, lse, safe)


def _chunk_grad(state: tuple[torch.Tensor, torch.Tensor, torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """(softmax - one-hot) * scale per token, in place of the float32 logits: the scale is folded into
    the exponent (log 0 = -inf gives ignored tokens exact zeros), one pass for softmax and scale."""
    logits, lse, safe = state
    scale = scale.unsqueeze(1)
    grad = logits.sub_(lse - scale.log()).exp_()
    return grad.scatter_add_(1, safe, -scale)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype F.linear would compute in: autocast's when it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


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
