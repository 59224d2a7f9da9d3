"""Selective and full activation checkpointing change memory, never the gradients; what they recompute
is counted op by op."""

from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import set_checkpoint_early_stop

from llamafoundry.model import Transformer
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.parallel import apply_activation_checkpointing
from tests.helpers import GQA


def gradients(mode: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    torch.manual_seed(0)
    model = Transformer(GQA)
    apply_activation_checkpointing(model, mode)
    batch = torch.randint(0, GQA.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    lm_loss(model, batch).backward()
    return {n: p.grad for n, p in model.named_parameters()}, list(model.state_dict())


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_checkpointed_gradients_equal_plain_ones(mode):
    plain, names = gradients("none")
    checkpointed, checkpointed_names = gradients(mode)
    assert checkpointed_names == names  # the wrapper leaves the state-dict names (and checkpoints) alone
    for (name, a), b in zip(plain.items(), checkpointed.values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)


def test_selective_checkpointing_recomputes_only_cheap_ops():
    from torch.utils.checkpoint import CheckpointPolicy

    from llamafoundry.train.parallel import _selective_policy

    assert _selective_policy(None, torch.ops.aten.mm.default) == CheckpointPolicy.MUST_SAVE
    assert _selective_policy(None, torch.ops.aten.mul.Tensor) == CheckpointPolicy.PREFER_RECOMPUTE
    assert _selective_policy(None, torch.ops.aten.silu.default) == CheckpointPolicy.PREFER_RECOMPUTE


MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}


def is_expensive(op: str) -> bool:
    """A matmul or an attention forward (fused SDPA kernels, whatever their name): what selective keeps."""
    name = op.removeprefix("aten.")
    return name in MATMULS or ("attention" in name and not name.endswith("_backward"))


class OpCounter(TorchDispatchMode):
    """Counts every aten op that runs (ops a checkpoint serves from its cache never reach it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def backward_ops(mode: str) -> Counter[str]:
    """The aten ops of one backward pass under `mode`, recomputation included."""
    torch.manual_seed(0)
    model = Transformer(GQA)
    apply_activation_checkpointing(model, mode)
    batch = torch.randint(0, GQA.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    loss = lm_loss(model, batch)
    with OpCounter() as counter:
        loss.backward()
    return counter.ops


def expensive(ops: Counter[str]) -> Counter[str]:
    return Counter({op: n for op, n in ops.items() if is_expensive(op)})


@pytest.mark.parametrize("early_stop", [True, False])
def test_selective_recomputes_no_matmul_or_attention(early_stop):
    with set_checkpoint_early_stop(early_stop):
        plain, selective = backward_ops("none"), backward_ops("selective")
    assert expensive(selective) == expensive(plain)
    assert selective.total() > plain.total()  # the cheap element-wise ops are recomputed


def test_full_recomputes_every_matmul_and_attention_of_the_blocks():
    # Early stop (torch's default) ends a recomputation at the last tensor the backward needs, which skips
    # each block's final projection; without it, "full" is the whole block.
    with set_checkpoint_early_stop(False):
        recomputed = expensive(backward_ops("full")) - expensive(backward_ops("none"))
    linears = sum(isinstance(m, nn.Linear) for m in Transformer(GQA).layers.modules())
    assert sum(n for op, n in recomputed.items() if op.removeprefix("aten.") in MATMULS) == linears
    assert sum(n for op, n in recomputed.items() if "attention" in op) == GQA.n_layers
