"""Resumable training checkpoints with torch.distributed.checkpoint (DCP).

A checkpoint is a folder `step_00001000/` holding the DCP files (model and optimizer state, sharded
across ranks when the model is, re-shardable to another world size on load, RNG state) and
`trainer_state.json` (step, schedule horizon, data-loader position, run config, model shape). It is
written as `step_00001000.tmp/` and renamed once complete, so a crash mid-write leaves only a `.tmp`
folder that resuming ignores. The newest `keep` complete checkpoints are kept.

DCP's `.metadata` file is a pickle: load only checkpoints your own runs wrote.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.train.distributed import barrier, is_rank0

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"step_(\d{8})")

# DCP warns when used in one process without a process group; that is a supported, intended use.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    keep: int,
) -> Path:
    """Write checkpoint `step` under `root` (collective: every rank calls it), then prune old ones."""
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save(
        {"model": model_state, "optim": optim_state, "rng": torch.get_rng_state()}, checkpoint_id=str(tmp)
    )
    barrier()
    if is_rank0():
        fileio.write_json(tmp / STATE_FILE, trainer_state)  # last: marks the folder complete
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def read_trainer_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{folder / STATE_FILE} is unreadable ({exc}); delete that checkpoint folder"
        ) from None


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG from `folder` in place; return its trainer state."""
    state = read_trainer_state(folder)
    model_state, optim_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optim": optim_state, "rng": torch.empty_like(torch.get_rng_state())}
    try:
        dcp.load(loaded, checkpoint_id=str(folder))
    except Exception as exc:  # DCP raises CheckpointException wrapping per-rank errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load checkpoint {folder}: {first}") from None
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    torch.set_rng_state(loaded["rng"])
    return state
