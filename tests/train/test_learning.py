"""Learning is real: the quickstart recipe beats the corpus's unigram baseline on held-out text."""

import json

import numpy as np
import pytest

from llamafoundry.data.shards import read_manifest, unigram_cross_entropy
from tests.conftest import REPO
from tests.helpers import run_cli


def unigram_baseline(folder) -> float:
    """Held-out cross-entropy of the train split's token frequencies (add-one), computed independently."""
    manifest = read_manifest(folder)
    vocab = manifest["vocab_size"]

    def tokens(split):
        return np.concatenate(
            [
                np.fromfile(folder / s["path"], dtype="<u2")
                for shards in manifest["splits"][split].values()
                for s in shards
            ]
        )

    counts = np.bincount(tokens("train"), minlength=vocab) + 1.0
    return float(-np.log(counts / counts.sum())[tokens("val")].mean())


@pytest.mark.slow
def test_quickstart_recipe_gets_clearly_below_the_unigram_baseline(shakespeare_tokens, tmp_path):
    result = run_cli(
        "train",
        "--config",
        str(REPO / "configs" / "tiny-cpu.toml"),
        "--data.tokens",
        str(shakespeare_tokens),
        "--data.mixture",
        "",
        "--output.dir",
        str(tmp_path / "run"),
        "--model.vocab_size",
        "512",
        "--train.max_minutes",
        "0",
        "--train.steps",
        "100",
        "--train.batch_tokens",
        "2048",
        "--train.micro_batch",
        "8",
        "--eval.every",
        "0",
        "--eval.batches",
        "8",
        "--output.tensorboard",
        "false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val_loss = [r["loss"] for r in records if r["kind"] == "val"][-1]
    baseline = unigram_baseline(shakespeare_tokens)
    assert baseline == pytest.approx(unigram_cross_entropy(shakespeare_tokens), rel=1e-9)
    assert val_loss < 0.8 * baseline, (val_loss, baseline)
