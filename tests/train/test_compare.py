"""`llamafoundry compare`: runs side by side (Figure 1), read from their folders."""

from __future__ import annotations

import json

from llamafoundry.train.compare import read_runs
from llamafoundry.train.recipe import RunRecipe


def fake_run(folder, preset: str, final_loss: float) -> None:
    """A run folder as `train` leaves it: its recipe and metrics, one validation metric from a hook."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(RunRecipe(model={"preset": preset}).to_toml())
    records = [
        {"kind": "train", "step": s, "tokens": 1000 * s, "loss": final_loss + 4 / s, "tokens_per_s": 500.0}
        for s in range(1, 11)
    ]
    records += [
        {
            "kind": "val",
            "step": 10,
            "tokens": 10_000,
            "loss": final_loss,
            "ppl": 2.718**final_loss,
            "hellaswag": 0.3,
        }
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_compare_overlays_runs_and_tabulates_where_they_ended(cli, tmp_path):
    fake_run(tmp_path / "small" / "train", "llama-1m", 5.0)
    fake_run(tmp_path / "big" / "train", "llama-15m", 4.0)
    out = tmp_path / "cmp"
    done = cli("compare", tmp_path / "small" / "train", tmp_path / "big" / "train", "-o", out)
    assert done.returncode == 0, done.stderr
    table = (out / "compare.md").read_text()
    # Two folders called "train": each is named by the part of its path that differs.
    assert "| small/train | 0.9M | 10,000 | 10 | 5.4000 | 5.0000 |" in table
    assert "| big/train | 15.2M | 10,000 | 10 | 4.4000 | 4.0000 |" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["name"] for r in read_runs([tmp_path / "small" / "train", tmp_path / "big" / "train"])] == [
        "small/train",
        "big/train",
    ]


def test_compare_refuses_what_is_not_a_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    done = cli("compare", tmp_path / "empty", "-o", tmp_path / "cmp")
    assert done.returncode != 0 and "not a training run folder" in done.stderr
    assert not (tmp_path / "cmp").exists()
