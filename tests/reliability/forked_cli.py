"""`llamafoundry ARGS` in processes forked from a server that has imported what a training run needs and
measured the CPU's peak (tests/reliability/forkserver_preload.py), so that a test can start, signal and
resume dozens of runs without paying 3 s for each.

Each run is a real process that runs the CLI's `main`, with the signal handlers a fresh
`python -m llamafoundry.cli` has, so SIGKILL and SIGINT land as they would there. Every process runs
torch on one thread: the runs of a test must all use the same number (a matmul's sums depend on it),
a tiny model trains fastest on one, and OpenMP threads started before a fork hang the children.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")


def start(args: list[str], log: Path) -> multiprocessing.Process:
    """Start `llamafoundry ARGS` with its stdout and stderr in `log`, which exists once the CLI starts."""
    _CONTEXT.set_forkserver_preload(["tests.reliability.forkserver_preload"])
    process = _CONTEXT.Process(target=_run, args=([str(a) for a in args], str(log)), daemon=True)
    process.start()
    return process


def stacks(process: multiprocessing.Process, log: Path) -> str:
    """The end of a live run's log after its Python stack is written there: for a test's failure message."""
    if process.is_alive():
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(0.5)
    return log.read_text()[-4000:] if log.exists() else "(no log)"


def _run(argv: list[str], log: str) -> None:
    import torch

    from llamafoundry.cli import main

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the forkserver ignores Ctrl-C; Python does not
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    fd = os.open(f"{log}.part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.rename(f"{log}.part", log)
    faulthandler.register(signal.SIGUSR1)  # `stacks`: where a run that seems stuck is
    sys.exit(main(argv))
