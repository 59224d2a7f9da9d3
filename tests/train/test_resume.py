"""Resume is exact: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.helpers import assert_user_error, run_cli, tiny_train_args, train_losses


def train_args(tokens, out, steps=80):
    return tiny_train_args(tokens, out, train__steps=steps, checkpoint__every=20, checkpoint__keep=3)


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(shakespeare_tokens, tmp_path):
    straight = run_cli(*train_args(shakespeare_tokens, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamafoundry.cli", *train_args(shakespeare_tokens, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = out / "checkpoints" / "step_00000040" / "trainer_state.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (out / "model").exists(), "the run must be killed mid-way"

    resumed = run_cli(*train_args(shakespeare_tokens, out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(out / "model" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert train_losses(out) == train_losses(tmp_path / "straight")
    assert len(train_losses(out)) == 80


def test_resume_refuses_a_checkpoint_of_another_shape(shakespeare_tokens, tmp_path, cli):
    first = cli(*train_args(shakespeare_tokens, tmp_path / "run", steps=20))
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    result = cli(
        *train_args(shakespeare_tokens, tmp_path / "run", steps=40), "--model.n_layers", "3", "--resume"
    )
    assert_user_error(result, "different model shape", "n_layers")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    again = cli(*train_args(shakespeare_tokens, tmp_path / "run", steps=20))
    assert_user_error(again, "already holds checkpoints", "--resume")
