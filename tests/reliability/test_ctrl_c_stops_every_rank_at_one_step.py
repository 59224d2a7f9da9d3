"""Ctrl-C in the terminal of a torchrun job (SIGINT to torchrun and every rank; torchrun forwards it once
more) stops all ranks after the same step, with one checkpoint and one line; resuming on as many ranks
ends bit-identical to the uninterrupted job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from llamafoundry.train.checkpointing import latest_checkpoint
from tests.helpers import tiny_train_args, train_losses
from tests.train import conftest

shakespeare_tokens = conftest.shakespeare_tokens  # the fixture, shared with tests/train
pytestmark = pytest.mark.distributed

STEPS = 30
SETTINGS = {"train__steps": STEPS, "train__micro_batch": 4, "checkpoint__every": 5, "train__log_every": 1}


def torchrun(tokens: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["-m", "llamafoundry.cli", *tiny_train_args(tokens, out, **SETTINGS), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def finish(job: subprocess.Popen) -> str:
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    return stderr


def test_ctrl_c_stops_both_ranks_at_one_step_and_the_job_resumes_bit_exact(shakespeare_tokens, tmp_path):
    finish(torchrun(shakespeare_tokens, tmp_path / "straight"))

    out = tmp_path / "run"
    job = torchrun(shakespeare_tokens, out)
    deadline = time.monotonic() + 120
    while len(train_losses(out) if (out / "metrics.jsonl").exists() else {}) < 8:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    _, stderr = job.communicate(timeout=120)

    lines = re.findall(r"llamafoundry train: .*", stderr)
    assert len(lines) == 1, stderr[-3000:]  # rank 0 speaks for the job
    stopped = re.fullmatch(
        r".*stopped by SIGINT after step (\d+) of 30; checkpoint saved in (\S+): .*", lines[0]
    )
    assert stopped and latest_checkpoint(out / "checkpoints") == Path(stopped[2]), lines[0]
    assert "llamafoundry/train" not in stderr  # no rank's traceback (torchrun prints its own SignalException)
    assert not any(p.name.endswith(".tmp") for p in (out / "checkpoints").iterdir())

    finish(torchrun(shakespeare_tokens, out, "--resume"))
    assert train_losses(out) == train_losses(tmp_path / "straight")
    final = load_file(out / "model" / "model.safetensors")
    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert all(final[k].equal(straight[k]) for k in straight)
