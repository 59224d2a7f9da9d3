"""`llamafoundry scaling run`: a grid of sizes x token budgets, each a normal run folder; finished runs are
skipped, unfinished ones resume; learning rate and warmup follow the stated rule; bad sweeps are one line."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from llamafoundry.config import ModelConfig, matmul_params
from llamafoundry.train.recipe import load_run_recipe
from llamafoundry.train.sweep import kaplan_lr
from tests.helpers import assert_user_error

BASE = [
    "--model.vocab_size=512",
    "--model.max_seq_len=64",
    "--data.seq_len=64",
    "--train.batch_tokens=1024",
    "--train.micro_batch=8",
    "--train.precision=fp32",
    "--eval.batches=2",
    "--output.tensorboard=false",
]


def sweep(cli, tokens, out, *extra: str, sizes: str = "32x1,64x2", budgets: str = "4096,8192"):
    return cli(
        "scaling",
        "run",
        "--sizes",
        sizes,
        "--budgets",
        budgets,
        "--points",
        "2",
        "-o",
        out,
        f"--data.tokens={tokens}",
        *BASE,
        *extra,
    )


def val_tokens(run) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens"] for r in records if r["kind"] == "val"]


def test_a_sweep_trains_its_grid_once_resumes_what_is_unfinished_and_fits(cli, shakespeare_tokens, tmp_path):
    out = tmp_path / "sweep"
    done = sweep(cli, shakespeare_tokens, out)
    assert done.returncode == 0, done.stderr
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [r.name for r in runs] == ["32x1x1_4.096K", "32x1x1_8.192K", "64x2x1_4.096K", "64x2x1_8.192K"]
    for run in runs:
        assert (run / "report.md").is_file() and (run / "model" / "config.json").is_file()
        recipe = load_run_recipe(run / "config.toml")
        params = matmul_params(recipe.model_config())
        assert recipe.train.lr == pytest.approx(kaplan_lr(params))
        steps = math.ceil(recipe.train.tokens / 1024)
        assert recipe.train.warmup_steps == max(1, min(round(params / 1024), steps // 20))
        assert len(val_tokens(run)) == 2  # --points validations: one midway, one at the end
        assert val_tokens(run)[-1] == recipe.train.tokens
    lrs = {load_run_recipe(r / "config.toml").train.lr for r in runs}
    assert len(lrs) == 2  # one per size, the larger the lower
    summary = json.loads((out / "sweep.json").read_text())
    assert {r["status"] for r in summary["runs"]} == {"trained"} and "Kaplan" in summary["rule"]

    untouched = {r: (r / "metrics.jsonl").read_bytes() for r in runs}
    unfinished = runs[-1]
    (unfinished / "report.md").unlink()
    shutil.rmtree(unfinished / "model")
    again = sweep(cli, shakespeare_tokens, out)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done already") == 3
    statuses = {r["run"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert statuses[unfinished.name] == "resumed"
    assert (unfinished / "report.md").is_file()
    for run in runs[:-1]:
        assert (run / "metrics.jsonl").read_bytes() == untouched[run]
    assert val_tokens(unfinished)[-1] == 8192 and val_tokens(unfinished) == sorted(
        set(val_tokens(unfinished))
    )

    fitted = cli("scaling", "fit", out, "--bootstrap", "0", "-o", tmp_path / "fit")
    assert fitted.returncode == 0, fitted.stderr
    assert "from 8 points of 4 runs" in fitted.stdout
    compared = cli("compare", out, "-o", tmp_path / "compare")
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.count("| 64x2x1_") == 2


def test_a_sweep_rerun_with_other_settings_is_refused(cli, shakespeare_tokens, tmp_path):
    out = tmp_path / "sweep"
    assert sweep(cli, shakespeare_tokens, out, sizes="32x1", budgets="2048").returncode == 0
    changed = sweep(cli, shakespeare_tokens, out, "--lr-rule", "recipe", sizes="32x1", budgets="2048")
    assert_user_error(changed, "was started with other settings")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": "nowhere"}, "does not exist; build it with `llamafoundry data tokenize`"),
        ({"sizes": "64-by-2"}, "is not DIMxLAYERS"),
        ({"sizes": "64x2x3"}, "multiple of the heads"),
        ({"budgets": "1e6,lots"}, "'lots' is not a number"),
        ({"budgets": "100"}, "less than one step"),
    ],
)
def test_bad_sweeps_are_one_line_and_train_nothing(cli, shakespeare_tokens, tmp_path, change, message):
    tokens = tmp_path / change["tokens"] if "tokens" in change else shakespeare_tokens
    settings = {k: v for k, v in change.items() if k != "tokens"}
    done = sweep(cli, tokens, tmp_path / "sweep", **settings)
    assert_user_error(done, message)
    assert not (tmp_path / "sweep").exists()


def test_the_learning_rate_rule_is_kaplans_line():
    # Kaplan et al. (2020) eq. D.1 at 1e6 and 1e9 parameters, computed by hand.
    assert kaplan_lr(1e6) == pytest.approx(0.003239 - 0.0001395 * 13.8155, rel=1e-4)
    assert kaplan_lr(1e9) == pytest.approx(0.000348, abs=2e-6)
    assert kaplan_lr(matmul_params(ModelConfig(dim=64, n_layers=2, n_heads=1, vocab_size=512))) > kaplan_lr(
        1e9
    )
