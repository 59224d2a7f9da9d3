"""Fixtures shared by the whole suite."""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from llamafoundry.cli import main
from tests.helpers import Done

REPO = Path(__file__).resolve().parents[1]
# Real public files (benchmarks, corpora, Meta's tokenizer) live beside the project, read-only.
SHARED_DATA = Path(os.environ.get("LLAMAFOUNDRY_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set LLAMAFOUNDRY_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The CI machine has 2 cores; pin torch to them so timings and reductions are stable.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def cli(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Done]:
    """Run `llamafoundry ARGS` in this process through the CLI's `main`, with `stdin` as its standard input:
    the exit code, stdout and stderr a user would see, without the seconds a fresh interpreter costs.
    Tests where the process itself is the point (torchrun, SIGKILL, the installed console script, a
    server) start one instead."""

    def run(*args: object, stdin: str = "") -> Done:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capfd.readouterr()  # what the test printed before is not the command's output
        # A command that seeds torch (training does) leaves this process's generator as it found it.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(record=True) as caught:
            _python_warning_filters()
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's usage errors end the process with code 2
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        # capfd also holds what C++ code (SentencePiece, torch) writes to the file descriptors; warnings,
        # which pytest would keep to itself, go to stderr as a fresh interpreter prints them.
        out, err = capfd.readouterr()
        err += "".join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught
        )
        return Done(code, out, err)

    return run


def _python_warning_filters() -> None:
    """The warning filters of a plain `python` (no -W): pytest's own are not what a user runs with."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
