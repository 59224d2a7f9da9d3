"""The fused output projection + cross-entropy (train/loss.py) against the unfused loss on full logits."""

import pytest
import torch
import torch.nn.functional as F

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.train.loss import IGNORE_INDEX, linear_cross_entropy, lm_loss

# Float rounding only: in bf16 each chunk's weight gradient is rounded to bf16 once, as the unfused
# product is (about 2^-8 of its largest entries); float32 agrees to its own rounding.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype, enabled=dtype != torch.float32)


def _close(ours: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> None:
    error = (ours - reference).abs().max() / reference.abs().max()
    assert error < TOLERANCE[dtype], f"relative error {error:.2e}"


def _targets(n: int, vocab: int) -> torch.Tensor:
    targets = torch.randint(0, vocab, (n,))
    targets[::5] = IGNORE_INDEX
    return targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_grads_match_cross_entropy_on_full_logits(dtype):
    torch.manual_seed(0)
    hidden = torch.randn(150, 32, requires_grad=True)
    weight = (torch.randn(500, 32) * 0.2).requires_grad_()
    targets = _targets(150, 500)
    results = []
    for loss_fn in (
        lambda: F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=IGNORE_INDEX),
        lambda: linear_cross_entropy(hidden, weight, targets, chunk=64),  # 150 = 64 + 64 + 22
    ):
        with _autocast(dtype):
            loss = loss_fn()
        (loss * 0.3).backward()  # the trainer scales each micro-batch's loss by its weight
        results.append((loss.detach(), hidden.grad, weight.grad))
        hidden.grad = weight.grad = None
    (ref_loss, ref_h, ref_w), (loss, grad_h, grad_w) = results
    assert loss.dtype == torch.float32 and grad_h.dtype == grad_w.dtype == torch.float32
    assert abs(loss - ref_loss) < 1e-5 * ref_loss
    _close(grad_h, ref_h, dtype)
    _close(grad_w, ref_w, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lm_loss_of_a_tied_model_matches_the_unfused_loss(dtype):
    """The table gets gradients from the embedding and the output projection; finetune targets
    ([B, 2, L + 1] with IGNORE_INDEX) go through the same path."""
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=300, max_seq_len=16, tie_embeddings=True)
    model = Transformer(cfg)
    tokens = torch.randint(0, 300, (3, 17))
    batch = torch.stack([tokens, torch.where(torch.rand(3, 17) < 0.3, IGNORE_INDEX, tokens)], dim=1)

    def unfused():
        logits = model(tokens[:, :-1]).flatten(0, 1).float()
        return F.cross_entropy(logits, batch[:, 1, 1:].flatten(), ignore_index=IGNORE_INDEX)

    grads = []
    for loss_fn in (unfused, lambda: lm_loss(model, batch)):
        with _autocast(dtype):
            loss = loss_fn()
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
        model.zero_grad(set_to_none=True)
    (ref_loss, ref), (loss, ours) = grads
    assert abs(loss - ref_loss) < 1e-5 * ref_loss
    assert ours.keys() == ref.keys()
    for name in ref:
        _close(ours[name], ref[name], dtype)


def test_all_ignored_targets_give_nan_loss_and_zero_grads_as_cross_entropy_does():
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(20, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((10,), IGNORE_INDEX), chunk=4)
    (loss * 0).backward()  # a finetune micro-batch without reply tokens weighs 0
    assert loss.isnan()
    assert not hidden.grad.any() and not weight.grad.any()


def test_without_grad_only_the_loss_is_computed():
    """Validation runs under no_grad: the same loss, no gradient products."""
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(40, 8), torch.randn(30, 8), _targets(40, 30)
    reference = F.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden.requires_grad_(), weight, targets, chunk=16)
    assert loss.grad_fn is None
    assert abs(loss - reference) < 1e-5 * reference
