"""A run stopped anywhere resumes exactly: SIGKILL (nothing of ours runs) and SIGINT (Ctrl-C: the run stops
at the end of its step, with a checkpoint) at 20 seeded random points each, some inside checkpoint
writes, and 4 SIGTERMs, each followed by `--resume`. One run is stopped and resumed 44 times over; every
resume must log the uninterrupted run's losses bit for bit, and the final weights must be the same bits.
A second Ctrl-C stops at once, also inside a checkpoint write, and loses nothing either."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llamafoundry.errors import Interrupted
from llamafoundry.train.checkpointing import latest_checkpoint, save_checkpoint, verify_manifest
from llamafoundry.train.metrics import read_metrics
from llamafoundry.train.recipe import load_run_recipe
from llamafoundry.train.trainer import train
from tests.helpers import tiny_train_args
from tests.reliability import forked_cli
from tests.train import conftest

shakespeare_tokens = conftest.shakespeare_tokens  # the fixture, shared with tests/train

STEPS = 100
SETTINGS = {"train__steps": STEPS, "checkpoint__every": 2, "checkpoint__keep": 2, "train__log_every": 1}
# How a run is stopped, and how often.
KINDS = {"SIGKILL": 20, "SIGINT": 20, "SIGTERM": 4}
# Where the signal is sent: at a random moment after the CLI starts (loading, resuming), at a random
# moment after the run reaches its target step, or while a checkpoint is being written (the process is
# stopped with SIGSTOP while a step_*.tmp folder exists, then signalled).
MODES = ["start"] * 6 + ["step"] * 7 + ["write"] * 7
WAIT_S = 120


@dataclass
class Point:
    kind: str
    mode: str
    target: int  # the step the run must have logged first (modes step and write)

    @property
    def signum(self) -> int:
        return signal.Signals[self.kind]


def plan(seed: int) -> list[Point]:
    """The stopping points, kinds mixed, targets increasing so that the run moves on."""
    rng = random.Random(seed)
    points = [(kind, mode) for kind, n in KINDS.items() for mode in rng.sample(MODES, len(MODES))[:n]]
    rng.shuffle(points)
    targets = sorted(rng.sample(range(1, STEPS - 20), len(points)))  # room for what each stop adds
    return [Point(kind, mode, target) for (kind, mode), target in zip(points, targets, strict=True)]


def test_runs_stopped_at_random_points_resume_bit_exact(shakespeare_tokens, tmp_path):
    reference = tmp_path / "reference"
    _finish(tiny_train_args(shakespeare_tokens, reference, **SETTINGS), tmp_path / "reference.log")
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    out = tmp_path / "run"
    args = [*tiny_train_args(shakespeare_tokens, out, **SETTINGS), "--resume"]
    landed, trained = Counter(), []
    for i, point in enumerate(plan(seed=12)):
        log = tmp_path / f"run{i:02d}.log"
        before = _losses(out)
        where, exitcode = _stop_once(args, log, out, point)
        _check_exit(point, where, exitcode, log, out)
        logged = _losses(out)
        assert all(logged[s] == expected[s] for s in logged), f"run {i} ({point}): losses differ"
        landed[point.kind, where] += 1
        trained.append(len(set(logged) - set(before)))

    _finish(args, tmp_path / "final.log")
    assert _losses(out) == expected
    final = load_file(out / "model" / "model.safetensors")
    straight = load_file(reference / "model" / "model.safetensors")
    assert final.keys() == straight.keys() and all(final[k].equal(straight[k]) for k in final)
    in_writes = sum(n for (_, where), n in landed.items() if where == "write")
    assert in_writes >= sum(p.mode == "write" for p in plan(seed=12)), landed
    print(
        f"stops (kind, where): {dict(landed)}; resumes bit-exact: {len(trained)} of {len(trained)}, "
        f"{sum(n > 0 for n in trained[1:]) + 1} of them trained before the next stop"
    )


def test_a_second_ctrl_c_stops_at_once_without_saving(shakespeare_tokens, tmp_path):
    out = tmp_path / "run"
    args = tiny_train_args(shakespeare_tokens, out, train__steps=10, checkpoint__every=2, eval__every=3)
    recipe = load_run_recipe(None, args[1:])

    def ctrl_c_twice(trainer, step, record):  # at step 3's validation, inside the loop
        os.kill(os.getpid(), signal.SIGINT)  # asks for a stop after this step
        os.kill(os.getpid(), signal.SIGINT)  # and now

    with pytest.raises(Interrupted, match="stopped at once by a second SIGINT, without saving") as stop:
        train(recipe, on_validate=[ctrl_c_twice], device="cpu")
    assert stop.value.exit_code == 130
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]


class CtrlC:
    """Pickled inside DCP's write of a checkpoint: a Ctrl-C that lands there."""

    def __reduce__(self):
        raise KeyboardInterrupt


def test_ctrl_c_inside_a_checkpoint_write_is_a_keyboard_interrupt_and_loses_nothing(tmp_path):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 1, model, optimizer, {"step": 1}, keep=2)
    optimizer.param_groups[0]["ctrl_c"] = CtrlC()  # saved by DCP as a pickled entry
    with pytest.raises(KeyboardInterrupt) as raised:
        save_checkpoint(tmp_path, 2, model, optimizer, {"step": 2}, keep=2)
    assert type(raised.value) is KeyboardInterrupt  # not DCP's CheckpointException, which tracebacks
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    verify_manifest(tmp_path / "step_00000001")


def _finish(args: list[str], log: Path) -> None:
    child = forked_cli.start(args, log)
    child.join(WAIT_S)
    try:
        assert child.exitcode == 0, forked_cli.stacks(child, log)  # a run still going: its stack too
    finally:
        if child.is_alive():
            child.kill()


def _stop_once(args: list[str], log: Path, out: Path, point: Point) -> tuple[str, int]:
    """Start the run, send `point`'s signal where it says, wait for the end: where the signal landed,
    and the exit code."""
    checkpoint = latest_checkpoint(out / "checkpoints")
    first = max(point.target, (int(checkpoint.name[5:]) if checkpoint else 0) + 1)
    assert first < STEPS, f"the run reached its end before {point}: raise STEPS"
    metrics = out / "metrics.jsonl"
    stale = metrics.stat().st_ino if metrics.exists() else None
    child = forked_cli.start(args, log)
    try:
        landed = _deliver(child, point, log, out, stale, first)
        child.join(WAIT_S)
        assert child.exitcode is not None, f"{point}: the run did not end"
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
    return landed, child.exitcode


def _deliver(child, point: Point, log: Path, out: Path, stale: int | None, first: int) -> str:
    rng = random.Random(point.target)
    if point.mode == "start":
        _wait(child, log, log.exists, f"{point}: the CLI did not start")
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(child.pid, point.signum)
        return "start"
    _wait(child, log, lambda: _own_last_step(out, stale) >= first, f"{point}: step {first} never logged")
    if point.mode == "step":
        time.sleep(rng.uniform(0, 0.06))
    while True:
        if point.mode == "write":
            _wait(child, log, lambda: _writing(out), f"{point}: no checkpoint write came")
        os.kill(child.pid, signal.SIGSTOP)
        writing = _writing(out)
        if writing or point.mode == "step":
            os.kill(child.pid, point.signum)
            os.kill(child.pid, signal.SIGCONT)
            return "write" if writing else "step"
        os.kill(child.pid, signal.SIGCONT)  # the write ended before the stop: take the next one


def _check_exit(point: Point, where: str, exitcode: int, log: Path, out: Path) -> None:
    """SIGKILL (and SIGTERM before training starts): the process died of it. Otherwise exit 128 + the
    signal, one line that says where the run stopped, no traceback."""
    text = log.read_text()
    if exitcode == -point.signum:
        assert point.kind == "SIGKILL" or (point.kind == "SIGTERM" and where == "start"), text
        return
    assert exitcode == 128 + point.signum, text
    lines = [line for line in text.splitlines() if line.startswith("llamafoundry")]
    assert "Traceback" not in text and len(lines) == 1, text
    name = signal.Signals(point.signum).name
    stopped = re.search(rf"stopped by {name} after step (\d+) of \d+; checkpoint saved in (\S+):", lines[0])
    if stopped:
        assert latest_checkpoint(out / "checkpoints") == Path(stopped[2])
        assert Path(stopped[2]).name == f"step_{int(stopped[1]):08d}"
    else:  # stopped while starting up, before the training loop: nothing was written
        assert point.kind == "SIGINT" and lines[0] == "llamafoundry train: interrupted", text


def _wait(child, log: Path, condition, failure: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if not child.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"{failure}; the run's log ends:\n{forked_cli.stacks(child, log)}")
        time.sleep(0.002)


def _own_last_step(out: Path, stale: int | None) -> int:
    """The last step in metrics.jsonl once this run has rewritten it (a resumed run drops the records
    after its checkpoint first; until then the file is the previous run's)."""
    path = out / "metrics.jsonl"
    try:
        if path.stat().st_ino == stale:
            return 0
    except FileNotFoundError:
        return 0
    return max(_losses(out), default=0)


def _writing(out: Path) -> bool:
    folder = out / "checkpoints"
    return folder.is_dir() and any(p.name.endswith(".tmp") for p in folder.iterdir())


def _losses(folder: Path) -> dict[int, float]:
    path = folder / "metrics.jsonl"
    records = read_metrics(path) if path.exists() else []
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
