"""The quickstart sizes its model for its budget (issue 20): the chooser, and the whole command on a small
corpus (Shakespeare's paragraphs, not the standard library: seconds, not minutes), with `--model`
overriding the choice and a rerun reusing the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llamafoundry.quickstart import FIT, pick, predict_losses
from llamafoundry.train.recipe import load_run_recipe
from llamafoundry.train.scaling import read_law
from tests.conftest import REPO
from tests.helpers import assert_user_error


def candidates() -> list[dict]:
    """Three sizes whose tokens/s fall as their size grows, as on any machine."""
    return [
        {"name": "small", "matmul_params": 1e5, "tokens_per_s": 50_000.0},
        {"name": "medium", "matmul_params": 5e5, "tokens_per_s": 25_000.0},
        {"name": "large", "matmul_params": 2e6, "tokens_per_s": 10_000.0},
    ]


def test_the_chooser_buys_a_larger_model_with_a_longer_budget():
    law = read_law(FIT)
    # A minute, an hour, a week: the fit's alpha near 1 makes size pay off slowly on this corpus.
    budgets = (1, 60, 10_000)
    choices = [pick(predict_losses(law, candidates(), minutes * 60))["name"] for minutes in budgets]
    assert choices == ["small", "medium", "large"]
    rows = predict_losses(law, candidates(), 60.0)
    assert [r["tokens"] for r in rows] == [3e6, 1.5e6, 6e5]
    assert rows[0]["predicted_loss"] == pytest.approx(law.loss(1e5, 3e6), rel=1e-12)


def test_the_recipe_trains_in_the_units_of_the_fit():
    """The prediction is per token of the fit's vocabulary at its context, measured on its batches."""
    units = json.loads(FIT.read_text())["units"]
    ours, fits = (load_run_recipe(REPO / "configs" / name) for name in ("tiny-cpu.toml", "thesis-cpu.toml"))
    assert ours.model_config().vocab_size == fits.model_config().vocab_size == units["vocab_size"]
    assert ours.data.seq_len == fits.data.seq_len == units["seq_len"]
    assert (ours.train.batch_tokens, ours.eval.batches) == (fits.train.batch_tokens, fits.eval.batches)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    text = (shared_data / "corpora/tinyshakespeare/input.txt").read_text()
    docs = root / "docs.jsonl"
    paragraphs = [p for p in text.split("\n\n") if p.strip()][:3000]  # ~450K characters
    docs.write_text("".join(json.dumps({"id": str(i), "text": p}) + "\n" for i, p in enumerate(paragraphs)))
    path = root / "recipe.toml"
    path.write_text(
        f'[run]\noutput = "{root / "unused"}"\n[sources.jsonl]\ninputs = ["{docs}"]\n[mixture.jsonl]\nweight = 1.0\n'
    )
    return path


def quickstart(cli, out: Path, recipe: Path, *flags: object):
    return cli("quickstart", "-o", out, "--data-recipe", recipe, "--minutes", 0.05, *flags)


@pytest.mark.slow
def test_the_quickstart_chooses_reports_and_reuses_its_choice(cli, recipe, tmp_path):
    out = tmp_path / "qs"
    done = quickstart(cli, out, recipe, "--sizes", "16x1,32x1")
    assert done.returncode == 0, done.stderr[-3000:]
    choice = json.loads((out / "choice.json").read_text())
    assert [c["name"] for c in choice["candidates"]] == ["16x1", "32x1"]
    best = min(choice["candidates"], key=lambda c: c["predicted_loss"])
    assert choice["chosen"] == best["name"] and not choice["override"]
    config = load_run_recipe(out / "train" / "config.toml").model_config()
    assert (config.dim, config.n_layers, config.vocab_size) == (best["model"]["dim"], 1, 1024)
    report = (out / "report.md").read_text()
    assert (
        "| candidate | shape | parameters (N) | tokens/s (measured) | tokens at budget | predicted loss |"
        in report
    )
    for c in choice["candidates"]:
        name = f"**{c['name']}**" if c is best else c["name"]
        assert f"| {name} | {c['shape']} | {c['params']:,} ({c['matmul_params']:,}) |" in report
    val = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in val if r["kind"] == "val"][-1]["loss"]
    assert f"has the least predicted loss ({best['predicted_loss']:.3f})" in report
    assert f"Measured: validation loss {measured:.3f}" in report
    speeds = json.loads((out / "calibration.json").read_text())
    assert len(speeds) == 2 and all(v > 0 for v in speeds.values())

    # A rerun reuses the choice, the speeds and the model, even asked for other candidates.
    again = quickstart(cli, out, recipe, "--sizes", "64x2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the choice made when" in again.stdout and "reusing the trained model" in again.stdout
    assert json.loads((out / "choice.json").read_text()) == choice

    # --model overrides the choice: that preset alone is calibrated, trained and reported as such.
    shutil.rmtree(out / "train")  # how a user trains again (the corpus, tokenizer and tokens are kept)
    done = quickstart(cli, out, recipe, "--model", "llama-1m")
    assert done.returncode == 0, done.stderr[-3000:]
    choice = json.loads((out / "choice.json").read_text())
    assert (choice["chosen"], choice["override"], len(choice["candidates"])) == ("llama-1m", True, 1)
    config = load_run_recipe(out / "train" / "config.toml").model_config()
    assert (config.dim, config.n_layers, config.n_heads, config.vocab_size) == (128, 4, 4, 1024)
    assert "`--model llama-1m` overrides the choice" in (out / "report.md").read_text()

    # Another vocabulary has no fit to choose by; a model trained on another tokenizer is not reused.
    assert_user_error(quickstart(cli, out, recipe, "--vocab-size", 512), "1024-piece vocabulary", "--model")
    done = quickstart(cli, out, recipe, "--vocab-size", 512, "--model", "llama-1m")
    assert_user_error(done, "was trained with another tokenizer", str(out / "train"))
