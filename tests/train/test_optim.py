"""The recipe of Sec. 2.3, exactly: AdamW(0.9, 0.95), decay 0.1 on matrices, warmup + cosine to 10%, clip 1.0."""

import pytest
import torch

from llamafoundry.train.optim import (
    OptimConfig,
    Schedule,
    build_optimizer,
    clip_grad_norm,
    lr_at,
    param_groups,
    warmup_for,
)
from tests.helpers import MHA, random_model


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_ten_percent():
    peak, total, warmup = 3e-4, 10_000, 2000
    lrs = [lr_at(s, peak, total, warmup) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warmup)
    assert lrs[warmup // 2 - 1] == pytest.approx(peak / 2)
    assert lrs[warmup - 1] == pytest.approx(peak)  # warmup ends at the peak
    assert max(lrs) == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(0.1 * peak)  # cosine ends at 10% of the peak
    middle = warmup + (total - 1 - warmup) // 2
    assert lrs[middle] == pytest.approx(0.1 * peak + 0.5 * 0.9 * peak, rel=1e-3)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))


def test_warmup_is_the_papers_2000_steps_at_scale_and_scaled_down_for_short_runs():
    assert warmup_for(250_000) == 2000  # 1T tokens / 4M-token batches
    assert warmup_for(1000) == 50
    assert warmup_for(1000, warmup_steps=7) == 7


def test_schedule_sets_every_group_to_lr_at_the_step():
    model = random_model(MHA)
    cfg = OptimConfig(lr=1e-3)
    optimizer = build_optimizer(model, cfg)
    schedule = Schedule(cfg, total_steps=40)
    for step in (0, 1, 2, 25, 39):
        lr = schedule.apply(optimizer, step)
        assert lr == lr_at(step, 1e-3, 40, warmup_for(40))
        assert [g["lr"] for g in optimizer.param_groups] == [lr, lr]


def test_adamw_uses_the_papers_betas_and_decays_only_matrices():
    model = random_model(MHA)
    optimizer = build_optimizer(model, OptimConfig())
    decayed, plain = optimizer.param_groups
    assert (decayed["betas"], decayed["weight_decay"], plain["weight_decay"]) == ((0.9, 0.95), 0.1, 0.0)
    assert all(p.ndim == 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 2)[-2] for p in plain["params"]} == {
        "attention_norm",
        "ffn_norm",
        "norm",
    }
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    assert len(param_groups(model, 0.1)[0]["params"]) == 2 + 7 * MHA.n_layers


def test_gradients_are_clipped_to_norm_one():
    model = random_model(MHA)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = clip_grad_norm(model, 1.0)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert before > 100 and after == pytest.approx(1.0, rel=1e-5)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-6)
    clip_grad_norm(model, 1.0)
    assert all(torch.all(p.grad == 1e-6) for p in model.parameters())  # small gradients untouched


def test_the_recipe_gives_the_optimiser_every_setting_it_names():
    from llamafoundry.train.recipe import load_run_recipe

    section = load_run_recipe(
        None,
        [
            "--train.lr",
            "1e-3",
            "--train.beta2",
            "0.99",
            "--train.grad_clip",
            "0.5",
            "--train.warmup_steps",
            "7",
        ],
    ).train
    assert section.optim_config() == OptimConfig(lr=1e-3, beta2=0.99, grad_clip=0.5, warmup_steps=7)
    assert load_run_recipe(None).train.optim_config() == OptimConfig()  # warmup -1: the paper's, scaled
