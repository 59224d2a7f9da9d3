"""Selective and full activation checkpointing change memory, never the gradients."""

import pytest
import torch

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
