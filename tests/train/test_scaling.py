"""The loss law and the inference-budget planner (the paper's thesis): the fit recovers known coefficients,
the planner's optimum is a brute-force search's, and `scaling fit | plan` from the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llamafoundry.errors import UserError
from llamafoundry.train.recipe import RunRecipe
from llamafoundry.train.scaling import (
    CHINCHILLA_PUBLISHED,
    CHINCHILLA_REPLICATION,
    LossLaw,
    compute_optimal,
    fit_law,
    plan,
)

TRUE = LossLaw(E=1.8, A=300.0, B=500.0, alpha=0.35, beta=0.3)
SIZES = (1e6, 3e6, 1e7, 3e7, 1e8)
TOKENS = (1e8, 3e8, 1e9, 3e9, 1e10)


def noisy_points(law: LossLaw, noise: float = 0.003, seed: int = 1) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    return [(n, d, law.loss(n, d) * math.exp(rng.normal(0, noise))) for n in SIZES for d in TOKENS]


def test_the_fit_recovers_known_coefficients_within_its_bootstrap_intervals():
    fit = fit_law(noisy_points(TRUE), bootstrap=40)
    for name, value in TRUE.to_dict().items():
        low, high = fit.intervals[name]
        assert low <= value <= high, (name, value, (low, high))
    fitted, known = fit.law.to_dict(), TRUE.to_dict()
    assert fitted["E"] == pytest.approx(known["E"], rel=0.02)
    assert (fitted["alpha"], fitted["beta"]) == pytest.approx((known["alpha"], known["beta"]), rel=0.05)


@pytest.mark.parametrize(("target", "inference_tokens"), [(2.0, 0.0), (2.0, 1e12), (2.2, 1e13), (1.95, 1e11)])
def test_the_planners_optimum_is_a_brute_force_searchs(target: float, inference_tokens: float):
    choice = plan(CHINCHILLA_PUBLISHED, target, inference_tokens)
    smallest = (CHINCHILLA_PUBLISHED.A / (target - CHINCHILLA_PUBLISHED.E)) ** (
        1 / CHINCHILLA_PUBLISHED.alpha
    )
    sizes = smallest * np.exp(np.linspace(1e-6, math.log(1e8), 200_000))
    totals = [6 * n * CHINCHILLA_PUBLISHED.tokens_for(n, target) + 2 * n * inference_tokens for n in sizes]
    best = int(np.argmin(totals))
    assert choice.train_flops + choice.inference_flops == pytest.approx(totals[best], rel=1e-6)
    assert choice.params == pytest.approx(sizes[best], rel=1e-3)
    assert choice.loss == pytest.approx(target, rel=1e-9)


def test_without_inference_the_plan_is_compute_optimal_and_serving_more_picks_smaller_models():
    alone = plan(CHINCHILLA_PUBLISHED, 2.0, 0.0)
    n_opt, d_opt = compute_optimal(CHINCHILLA_PUBLISHED, alone.train_flops)
    assert (alone.params, alone.tokens) == pytest.approx((n_opt, d_opt), rel=1e-4)
    sizes = [plan(CHINCHILLA_PUBLISHED, 2.0, t).params for t in (0.0, 1e11, 1e12, 1e13, 1e14)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 2


@pytest.mark.parametrize("target", [1.9, 2.0, 2.2, 2.5])
def test_chinchilla_as_refitted_is_about_20_tokens_per_parameter_and_as_published_far_more(target: float):
    refitted = plan(CHINCHILLA_REPLICATION, target, 0.0)
    assert 15 <= refitted.tokens / refitted.params <= 25
    published = plan(CHINCHILLA_PUBLISHED, target, 0.0)
    assert published.tokens / published.params > 40


def test_plan_from_the_command_line_shows_the_choice_moving_to_smaller_models(cli):
    done = cli("scaling", "plan", "--target-loss", "2.0", "--chinchilla", "--inference-tokens", "1e13")
    assert done.returncode == 0, done.stderr
    rows = [
        line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "e+" in line
    ]
    served = [float(row[0]) for row in rows]
    params = [float(row[1]) for row in rows]
    ratios = [float(row[3].replace(",", "")) for row in rows]
    assert served[0] == 0 and served == sorted(served) and len(rows) == 6
    assert 15 <= ratios[0] <= 25  # compute-optimal: ~20 tokens per parameter
    assert params == sorted(params, reverse=True) and params[-1] < params[0] / 2
    assert "GPU-hours" in done.stdout and "tCO2eq" in done.stdout
    json_line = cli("scaling", "plan", "--target-loss", "2.0", "--chinchilla", "--json")
    choice = json.loads(json_line.stdout)
    assert choice["tokens"] / choice["params"] == pytest.approx(ratios[0], abs=1)


def test_bad_plans_and_fits_are_one_line():
    with pytest.raises(UserError, match="unreachable: the law's irreducible loss E is 1.69"):
        plan(CHINCHILLA_PUBLISHED, 1.5, 0.0)
    with pytest.raises(UserError, match="at least 6"):
        fit_law(noisy_points(TRUE)[:5])
    with pytest.raises(UserError, match="two or more model sizes"):
        fit_law([(1e6, d, TRUE.loss(1e6, d)) for d in (1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9)])


def fake_run(folder, preset: str, law: LossLaw) -> None:
    """A training run folder as `train` leaves it: its recipe and validation losses along the way."""
    from llamafoundry.config import get_preset, matmul_params

    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(RunRecipe(model={"preset": preset}).to_toml())
    params = matmul_params(get_preset(preset))
    lines = [
        json.dumps({"kind": "val", "step": i, "tokens": int(t), "loss": law.loss(params, t)})
        for i, t in enumerate(TOKENS)
    ]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_scaling_fit_and_plan_from_the_command_line(cli, tmp_path):
    presets = ("llama-1m", "llama-15m", "llama-110m", "llama-1b")
    for preset in presets:
        fake_run(tmp_path / preset, preset, TRUE)
    runs = [tmp_path / p for p in presets]
    done = cli("scaling", "fit", *runs, "--bootstrap", "5", "-o", tmp_path / "fit")
    assert done.returncode == 0, done.stderr
    law = json.loads((tmp_path / "fit" / "fit.json").read_text())["law"]
    for png in ("loss_vs_tokens.png", "iso_loss.png"):
        assert (tmp_path / "fit" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert law["E"] == pytest.approx(TRUE.E, rel=0.01)
    planned = cli(
        "scaling",
        "plan",
        "--target-loss",
        "2.3",
        "--inference-tokens",
        "1e12",
        "--fit",
        tmp_path / "fit",
        "--json",
    )
    assert planned.returncode == 0, planned.stderr
    choice = json.loads(planned.stdout)
    assert {"params", "tokens", "train_flops", "inference_flops", "loss"} <= set(choice)
    assert choice["loss"] == pytest.approx(2.3, rel=1e-6)
    # The training cost: its FLOPs at half an A100's 312 TFLOP/s bf16 peak, and the Sec. 6 formula.
    assert choice["train_gpu_hours"] == pytest.approx(choice["train_flops"] / (0.5 * 312e12) / 3600)
    assert choice["train_tco2eq"] == pytest.approx(choice["train_gpu_hours"] * 400 * 1.1 / 1e6 * 0.385)
    assert cli("scaling", "fit", tmp_path / "nowhere").returncode != 0
    missing = cli("scaling", "plan", "--target-loss", "2", "--fit", tmp_path / "none.json")
    assert missing.returncode != 0 and "not found" in missing.stderr
    unreachable = cli("scaling", "plan", "--target-loss", "1.0", "--chinchilla")
    assert unreachable.returncode != 0 and "unreachable" in unreachable.stderr
