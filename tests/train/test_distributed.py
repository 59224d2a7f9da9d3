"""torch.distributed on CPU: 2 gloo processes under torchrun (FSDP2, tensor + sequence parallel, resharding)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamafoundry.checkpoint import load_model
from tests.helpers import tiny_train_args, train_losses

pytestmark = pytest.mark.distributed

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, f"--nproc-per-node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def train(nproc: int, tokens: Path, out: Path, *extra: str, **settings) -> subprocess.CompletedProcess:
    result = torchrun(nproc, "-m", "llamafoundry.cli", *tiny_train_args(tokens, out, **settings), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "abort" not in result.stderr.lower() and "terminate called" not in result.stderr
    return result


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_fsdp_on_two_ranks_matches_one_rank(shakespeare_tokens, tmp_path, tied):
    # The same global batch: 2 ranks x 8 sequences, or 1 rank x 8 sequences x 2 accumulation steps.
    # A tied table (Llama 3.2) stays one parameter once sharded, or the ranks' losses part ways.
    settings = {"train__steps": 5, "model__tie_embeddings": str(tied).lower()}
    two_ranks = train(2, shakespeare_tokens, tmp_path / "two", **settings)
    train(1, shakespeare_tokens, tmp_path / "one", **settings)
    two, one = train_losses(tmp_path / "two"), train_losses(tmp_path / "one")
    assert len(two) == 5 and all(abs(two[s] - one[s]) < 1e-5 for s in one), (two, one)
    assert two_ranks.stdout.count("done:") == 1, two_ranks.stdout  # the job's last line, from rank 0
    model, _, cfg = load_model(tmp_path / "two" / "model")
    assert cfg.tie_embeddings == tied and (model.output.weight is model.tok_embeddings.weight) == tied


def test_tensor_parallel_with_sequence_parallel_matches_unsharded(tmp_path):
    out = tmp_path / "diff.json"
    result = torchrun(2, str(Path(__file__).parent / "workers" / "tp_check.py"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = json.loads(out.read_text())
    assert diffs["logits"] < 1e-5 and diffs["grads"] < 1e-5, diffs
    assert diffs["local_kv_heads"] == 1  # 2 key/value heads split over 2 ranks


@pytest.mark.parametrize(
    "layout",
    [{"parallel__dp_shard": 2, "parallel__activation_checkpoint": "selective"}, {"parallel__tp": 2}],
    ids=["fsdp-selective", "tp"],
)
def test_init_state_lands_whole_in_a_sharded_model(shakespeare_tokens, tmp_path, layout):
    out = tmp_path / "diff.json"
    recipe = tiny_train_args(shakespeare_tokens, tmp_path / "run", train__steps=1, **layout)[1:]
    result = torchrun(2, str(Path(__file__).parent / "workers" / "init_state_check.py"), str(out), *recipe)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text())["max_diff"] == 0.0


def test_two_rank_checkpoint_resumes_on_one_rank(shakespeare_tokens, tmp_path):
    common = {"train__steps": 6, "train__micro_batch": 4, "checkpoint__every": 3, "checkpoint__keep": 5}
    train(2, shakespeare_tokens, tmp_path / "a", **common)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000006")
    shutil.rmtree(tmp_path / "b" / "model")
    train(1, shakespeare_tokens, tmp_path / "b", "--resume", **common)
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (a, b)
    assert (tmp_path / "b" / "model" / "model.safetensors").is_file()


def test_a_dead_rank_takes_the_job_down_with_a_message(shakespeare_tokens, tmp_path):
    args = tiny_train_args(shakespeare_tokens, tmp_path / "run", train__steps=100_000)
    cmd = [*TORCHRUN, "--nproc-per-node=2", "-m", "llamafoundry.cli", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[1]), signal.SIGKILL)
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the job hung after a rank died")
    assert proc.returncode != 0
    assert "ChildFailedError" in stderr or "failed" in stderr.lower()
    assert "Signal 9 (SIGKILL)" in stderr or "SIGKILL" in stderr
