"""A training checkpoint folder as a model folder: `runs/X/checkpoints/step_NNNNNNNN`, read in one process.

The trainer writes it (train/checkpointing.py) with torch.distributed.checkpoint (DCP): `.distcp` files,
sharded when the model was, DCP's `.metadata`, our `manifest.json` of them and `trainer_state.json`
(step, run config, model shape). Loading reads only the model's entries, whole (DCP reshards any saved
layout into full tensors without a process group), never the optimizer's. DCP unpickles `.metadata`,
so the folder is checked against its manifest (`verify_manifest`) before DCP reads anything.

The tokenizer is the run's: `tokenizer.model` in the run folder (two levels up), else in the token
folder the run trained on (`data.tokens` in its config), else none (`--tokenizer` supplies one).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import torch

from llamafoundry.checkpoint.common import build_model, merge_adapters
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, load_tokenizer

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "llamafoundry-checkpoint-manifest/1"
# A checkpoint being written (.tmp) or being removed (.old), as train/checkpointing.py names them.
PARTIAL_DIR = re.compile(r"step_\d{8}\.(tmp|old)")
TOKENIZER = "tokenizer.model"

# DCP warns when used in one process without a process group; that is a supported, intended use.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def is_checkpoint(folder: Path) -> bool:
    """A training checkpoint folder, complete or not: DCP's `.metadata`, or the name of a partial one."""
    return (folder / ".metadata").is_file() or bool(PARTIAL_DIR.fullmatch(folder.name))


def load_checkpoint_model(
    folder: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    """(model, the run's tokenizer or None, config) from a complete checkpoint folder; UserErrors for a
    partial, damaged or foreign one."""
    if PARTIAL_DIR.fullmatch(folder.name) or not (folder / STATE_FILE).is_file():
        raise UserError(
            f"{folder} is an incomplete checkpoint (a save that was interrupted or is under way); "
            "use a complete step_NNNNNNNN folder beside it"
        )
    state = read_trainer_state(folder)
    if not isinstance(state.get("model_config"), dict):
        raise UserError(f"{folder / STATE_FILE} has no model_config; it is not a checkpoint of ours")
    cfg = ModelConfig.from_dict(state["model_config"])
    if max_seq_len is not None:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    verify_manifest(folder)  # before DCP unpickles .metadata
    model = build_model(cfg, _merged(_read_model_state(folder), state, folder), folder, dtype)
    return model, _run_tokenizer(folder, state), cfg


def _merged(weights: dict[str, torch.Tensor], state: dict, folder: Path) -> dict[str, torch.Tensor]:
    """A LoRA finetune's checkpoint (adapters beside frozen weights) as the plain model it stands for:
    the adapters merged with the run's [lora] alpha / rank."""
    if not any(".lora_A." in name for name in weights):
        return weights
    lora = state.get("config", {}).get("lora") if isinstance(state.get("config"), dict) else None
    if not (isinstance(lora, dict) and isinstance(lora.get("rank"), int) and lora["rank"] > 0):
        raise UserError(
            f"{folder} holds LoRA adapters but its run config has no [lora] rank to merge them by"
        )
    return merge_adapters(weights, float(lora.get("alpha", 16.0)) / lora["rank"])


def read_trainer_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{folder / STATE_FILE} is unreadable ({exc}); delete that checkpoint folder"
        ) from None


def _read_model_state(folder: Path) -> dict[str, torch.Tensor]:
    """The model's full tensors from the DCP files, in the dtypes they were saved in."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = dcp.FileSystemReader(str(folder)).read_metadata()
        state = {
            name.removeprefix("model."): torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
            for name, entry in metadata.state_dict_metadata.items()
            if name.startswith("model.") and isinstance(entry, TensorStorageMetadata)
        }
        dcp.load({"model": state}, checkpoint_id=str(folder))
    except Exception as exc:  # DCP wraps what a damaged file raises in many types
        lines = str(exc).strip().splitlines()
        raise UserError(
            f"cannot read checkpoint {folder}: {lines[0] if lines else type(exc).__name__}"
        ) from None
    return state


def _run_tokenizer(folder: Path, state: dict) -> Tokenizer | None:
    """The tokenizer of the run that wrote `folder`, where one can be found."""
    tokens = (
        state.get("config", {}).get("data", {}).get("tokens")
        if isinstance(state.get("config"), dict)
        else None
    )
    candidates = [folder.parent.parent / TOKENIZER]
    if isinstance(tokens, str) and tokens:
        candidates.append(Path(tokens) / TOKENIZER)
    found = next((p for p in candidates if p.is_file()), None)
    return load_tokenizer(found) if found is not None else None


# ---- the manifest: what makes a checkpoint folder safe to hand to DCP ------------------------------
def verify_manifest(folder: Path) -> None:
    """Refuse (UserError) a checkpoint folder without our manifest or whose DCP files differ from it."""
    manifest = _read_manifest(folder)
    advice = f"move that folder out of {folder.parent.name}/ to resume from the checkpoint before it"
    unlisted = sorted(
        p.name for p in folder.iterdir() if p.name not in (*manifest["files"], MANIFEST, STATE_FILE)
    )
    if unlisted:
        raise UserError(
            f"checkpoint {folder} holds {', '.join(unlisted)}, which its {MANIFEST} does not list (DCP "
            f"could unpickle it); {advice}"
        )
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise UserError(f"checkpoint {folder} is damaged: {name} is missing; {advice}")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise UserError(
                f"checkpoint {folder} is damaged: {name} has {size:,} bytes, its manifest says "
                f"{entry['bytes']:,} (truncated or replaced); {advice}"
            )
        regions = [[0, size, entry["sha256"]]] if "sha256" in entry else []
        for offset, length, digest in regions + entry.get("pickled", []):
            if sha256(path, offset, length) != digest:
                raise UserError(
                    f"checkpoint {folder}: {name} differs from what was saved (sha256 mismatch in bytes "
                    f"{offset:,}-{offset + length:,}), so it is not unpickled; {advice}"
                )


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(
            f"checkpoint {folder} has no {MANIFEST}: it was written by another program or an older "
            "llamafoundry, and loading DCP files unpickles them, which can run code; resume only from "
            "checkpoints this version wrote, or start a new run in another output.dir"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        problem = _manifest_problem(manifest)
    except (OSError, ValueError) as exc:
        problem = str(exc)
    if problem:
        raise UserError(
            f"{path} is not a llamafoundry checkpoint manifest ({problem}); refusing to load {folder}"
        )
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What makes `manifest` unusable, or None: it must give each DCP file's size, and the sha256 of
    `.metadata` and of the pickled regions."""
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"not of format {MANIFEST_FORMAT}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(".metadata"), dict):
        return "no entry for .metadata"
    if not isinstance(files[".metadata"].get("sha256"), str):
        return "no sha256 of .metadata"
    for name, entry in files.items():
        if not isinstance(entry, dict) or Path(name).name != name or name in (".", ".."):
            return f"bad entry {name!r}"
        if not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256", ""), str):
            return f"bad size or sha256 for {name!r}"
        regions = entry.get("pickled", [])
        if not isinstance(regions, list) or not all(_is_region(r) for r in regions):
            return f"bad pickled regions for {name!r}"
    return None


def _is_region(region: object) -> bool:
    """[offset, length, sha256]."""
    return (
        isinstance(region, list)
        and len(region) == 3
        and all(isinstance(x, int) and x >= 0 for x in region[:2])
        and isinstance(region[2], str)
    )


def sha256(path: Path, offset: int, length: int) -> str:
    """The sha256 of `length` bytes of `path` from `offset`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while length > 0:
            chunk = f.read(min(length, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            length -= len(chunk)
    return digest.hexdigest()
