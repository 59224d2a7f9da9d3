"""`llamafoundry eval MODEL --paper`: every task of Tables 3-9 with the paper's settings, each finished task
saved as it ends, so that a killed run continues where it stopped without redoing finished tasks."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import assert_user_error

from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.errors import UserError
from llamafoundry.eval.paper import PAPER_RUNS, claim
from llamafoundry.eval.tasks.base import TaskResult
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def stories(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Karpathy's stories260K with a 512-piece tokenizer trained here (it ships without one, see
    tests/inference/conftest.py), its context cut from 512 to 128 positions: prompts are cut to the context
    as lm-eval cuts them, and MMLU's 57 five-shot prompts then score in seconds, not a minute."""
    root = tmp_path_factory.mktemp("stories")
    tokenizer = train_tokenizer(
        [shared_data / "corpora/tinyshakespeare/input.txt"],
        root / "tok/tokenizer.model",
        vocab_size=512,
        input_sentence_size=20000,
        num_threads=1,
    )
    model, _, _ = load_model(shared_data / "models/stories260K/stories260K.bin")
    short = Transformer(dataclasses.replace(model.cfg, max_seq_len=128))
    short.load_state_dict(model.state_dict())
    return save_model(root / "model", short.eval(), tokenizer)


def finished(out: Path) -> list[Path]:
    return sorted((out / "tasks").glob("*.json"))  # not the hidden temporary files of a write under way


def test_paper_run_completes_every_table_and_resumes_after_sigkill(
    stories: Path, shared_data: Path, tmp_path: Path, cli
):
    out = tmp_path / "paper"
    # --limit 1 (not 20), one sample and four new tokens keep the test near a minute on two cores.
    args = ["eval", stories, "--paper", "--data-dir", shared_data, "--limit", "1", "--samples", "1"]
    args = [str(a) for a in [*args, "--max-new-tokens", "4", "--output", out]]
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        child = subprocess.Popen([sys.executable, "-m", "llamafoundry.cli", *args], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while len(finished(out)) < 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.kill()  # SIGKILL: nothing of ours runs
    finally:
        child.wait()
    first = log.read_text()
    assert "estimate for 23 runs: about" in first, first
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in finished(out)}
    assert 3 <= len(before) < len(PAPER_RUNS), first  # killed mid-run, some tasks done
    assert not (out / "results.json").exists()

    run = cli(*args)
    assert run.returncode == 0, run.stderr
    assert f"{len(before)} of 23 paper runs finished in an earlier run" in run.stderr
    assert run.stderr.count("done earlier, skipped") == len(before)
    for name, (inode, mtime, data) in before.items():  # not redone, not even rewritten
        path = out / "tasks" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == (inode, mtime, data)
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["task"], r["shots"]) for r in results] == [(t, s) for _, t, s in PAPER_RUNS]
    assert all("error" not in r and r["n"] >= 1 and r["paper_metric"] in r["metrics"] for r in results)
    table = (out / "results.md").read_text()
    for _, task, shots in PAPER_RUNS:
        assert f"| {task} | {shots} | " in table
    assert "- gsm8k (8-shot): paper exemplars" in table and "- mmlu (5-shot): dev" in table


def test_paper_flags_and_folders_that_are_not_its_own(model_folders, shared_data: Path, tmp_path: Path, cli):
    model = model_folders["native"]
    assert_user_error(cli("eval", model, "--output", tmp_path / "a"), "pass --tasks")
    assert_user_error(cli("eval", model, "--paper", "--tasks", "piqa"), "drop --tasks")
    assert_user_error(cli("eval", model, "--paper", "--shots", "1"), "drop --shots")
    plain = tmp_path / "plain"
    data = ["--data-dir", shared_data, "--limit", "1"]
    assert cli("eval", model, "--tasks", "piqa", *data, "--output", plain).returncode == 0
    assert_user_error(cli("eval", model, "--paper", *data, "--output", plain), "not a paper evaluation")
    assert not (plain / "tasks").exists()


def test_a_paper_folder_resumes_only_with_the_same_settings(tmp_path: Path):
    claim(tmp_path / "run", {"model": "m", "seed": 1, "limit": None})
    claim(tmp_path / "run", {"model": "m", "seed": 1, "limit": None})
    with pytest.raises(UserError, match=r"other settings \(limit, seed differ\)"):
        claim(tmp_path / "run", {"model": "m", "seed": 2, "limit": 5})


def test_a_saved_result_reads_back_as_it_was():
    result = TaskResult(
        "humaneval",
        0,
        {"pass@1": 0.5},
        "pass@1",
        [{"id": "a", "prompt": "def f():"}],
        seconds=1.5,
        details={"sandbox": {"layers": ["netns"]}},
        fewshot_source=None,
    )
    assert TaskResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
