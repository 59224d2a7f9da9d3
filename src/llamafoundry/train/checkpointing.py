"""Resumable training checkpoints with torch.distributed.checkpoint (DCP).

A checkpoint is a folder `step_00001000/` holding the DCP files (model and optimizer state, sharded
across ranks when the model is, re-shardable to another world size on load, RNG state), our
`manifest.json` of them, and `trainer_state.json` (step, schedule horizon, data-loader position, run
config, model shape). It is written as `step_00001000.tmp/` and renamed once complete, so a crash
mid-write leaves only a `.tmp` folder, which resuming ignores and the next run's start removes. The
newest `keep` complete checkpoints are kept.

DCP unpickles its `.metadata` file and the optimizer's non-tensor entries in the `.distcp` files, so a
checkpoint folder can run code when loaded. The manifest, written at save time, holds the size of every
DCP file and the sha256 of every byte DCP unpickles (all of `.metadata`, and the pickled regions of the
`.distcp` files; tensors, which DCP loads with `weights_only=True`, are only sized: hashing them all would
double the time of a save). Loading checks it before DCP reads anything and refuses a folder without it
or that differs from it: a damaged checkpoint, or DCP files that our runs did not write. Whoever can
write a checkpoint folder can also write its manifest, though: checkpoint folders must be trusted as
code is.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from llamafoundry import fileio

# The manifest and the reading of a checkpoint live with the model folders that load one (checkpoint/dcp.py).
from llamafoundry.checkpoint.dcp import (
    MANIFEST,
    MANIFEST_FORMAT,
    PARTIAL_DIR,
    STATE_FILE,
    read_trainer_state,
    sha256,
    verify_manifest,
)
from llamafoundry.errors import UserError
from llamafoundry.train.distributed import barrier, is_rank0, on_rank0

_STEP_DIR = re.compile(r"step_(\d{8})")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def remove_partial(root: Path) -> None:
    """Remove what interrupted saves left under `root`: `.tmp` and `.old` checkpoint folders (rank 0)."""
    if root.is_dir():
        for folder in root.iterdir():
            if PARTIAL_DIR.fullmatch(folder.name) and folder.is_dir():
                shutil.rmtree(folder)


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    keep: int,
) -> Path:
    """Write checkpoint `step` under `root` (collective: every rank calls it), then prune old ones.

    A failed write is a UserError naming the cause (a full disk, a read-only folder) on every rank; the
    checkpoints written before stay as they were.
    """
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"

    def problem(exc: OSError) -> str:
        return _save_problem(exc, step, root)

    on_rank0(lambda: _fresh_folder(tmp), problem)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state, "rng": torch.get_rng_state()}
    try:
        metadata = dcp.save(state, checkpoint_id=str(tmp))
    except (Exception, KeyboardInterrupt, dcp.CheckpointException) as exc:  # the last: a BaseException
        _reraise_interrupt(exc)
        raise _save_failure(exc, step, root, tmp, _tensor_bytes(state)) from None
    barrier()
    on_rank0(lambda: _finish(tmp, final, metadata, trainer_state, keep), problem)
    return final


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG from `folder` in place; return its trainer state.

    The folder's manifest is checked first: DCP unpickles nothing from a folder that differs from it.
    """
    state = read_trainer_state(folder)
    verify_manifest(folder)
    model_state, optim_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optim": optim_state, "rng": torch.empty_like(torch.get_rng_state())}
    try:
        dcp.load(loaded, checkpoint_id=str(folder))
    except (Exception, KeyboardInterrupt, dcp.CheckpointException) as exc:  # the last: a BaseException
        _reraise_interrupt(exc)
        cause = next((c for c in _causes(exc) if not isinstance(c, dcp.CheckpointException)), exc)
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"cannot load checkpoint {folder}: {first}") from None
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    torch.set_rng_state(loaded["rng"])
    return state


def _write_manifest(folder: Path, metadata: Metadata) -> None:
    """The manifest of the DCP files in `folder`: every file's size, the sha256 of `.metadata` and of each
    region of a `.distcp` file that DCP unpickles (its non-tensor entries, as `metadata` places them)."""
    pickled: dict[str, list[tuple[int, int]]] = {}
    for index, info in metadata.storage_data.items():
        if isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            pickled.setdefault(info.relative_path, []).append((info.offset, info.length))
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.name not in (MANIFEST, STATE_FILE)):
        entry: dict = {"bytes": path.stat().st_size}
        if path.name == ".metadata":
            entry["sha256"] = sha256(path, 0, entry["bytes"])
        if path.name in pickled:
            entry["pickled"] = [[o, n, sha256(path, o, n)] for o, n in sorted(pickled[path.name])]
        files[path.name] = entry
    fileio.write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})


def _fresh_folder(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)


def _finish(tmp: Path, final: Path, metadata: Metadata, trainer_state: dict, keep: int) -> None:
    """Rank 0: manifest, then trainer_state.json (last: it marks the folder complete), rename, prune."""
    _write_manifest(tmp, metadata)
    fileio.write_json(tmp / STATE_FILE, trainer_state)
    _retire(final)
    tmp.rename(final)
    for old in complete_checkpoints(final.parent)[:-keep] if keep > 0 else []:
        _retire(old)


def _retire(folder: Path) -> None:
    """Remove a checkpoint folder; renamed first, so that no half-removed folder looks complete."""
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        shutil.rmtree(old)


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C inside DCP arrives wrapped in its CheckpointException: let it through as itself."""
    for cause in _causes(exc):
        if isinstance(cause, KeyboardInterrupt):
            raise cause from None


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, the per-rank exceptions a DCP CheckpointException holds, and what each was raised from."""
    found, todo = [], [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        for failure in getattr(current, "failures", {}).values():  # rank -> (exception, traceback)
            todo.append(failure[0] if isinstance(failure, tuple) else failure)
        todo += [current.__cause__, current.__context__]
    return found


def _save_failure(exc: BaseException, step: int, root: Path, tmp: Path, needed: int) -> BaseException:
    """The UserError for a failed DCP write, or `exc` itself when it is no I/O problem (our bug)."""
    os_errors = [c for c in _causes(exc) if isinstance(c, OSError)]
    try:
        # torch's file writer can lose the errno ("unexpected pos 704 vs 598"): a disk without room for
        # this rank's share of the checkpoint is the cause then.
        full = shutil.disk_usage(tmp if tmp.exists() else root).free < needed
    except OSError:
        full = False
    if is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
    if full and not any(e.errno in _DISK_FULL for e in os_errors):
        os_errors.insert(0, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    if not os_errors:
        return exc
    return UserError(_save_problem(os_errors[0], step, root))


def _save_problem(exc: OSError, step: int, root: Path) -> str:
    cause = exc.strerror or str(exc)
    if exc.errno in _DISK_FULL:
        fix = "free space there, lower checkpoint.keep, or set output.dir on a larger disk"
    elif exc.errno in _READ_ONLY:
        fix = "make it writable or set output.dir to a writable folder"
    else:
        fix = "check that disk"
    return (
        f"{cause} while saving checkpoint step {step} to {root}: {fix}; --resume continues from the "
        "last complete checkpoint"
    )


def _tensor_bytes(state: object) -> int:
    """Bytes of the tensors in a (nested) state dict held by this rank."""
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_tensor_bytes(v) for v in state)
    if isinstance(state, torch.Tensor):
        local = state.to_local() if hasattr(state, "to_local") else state  # a DTensor's shard
        return local.numel() * local.element_size()
    return 0
