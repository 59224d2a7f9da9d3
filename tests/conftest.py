"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
