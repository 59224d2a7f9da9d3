"""Our own model folder: config.json (the ModelConfig), model.safetensors, tokenizer.model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from llamafoundry import __version__, fileio
from llamafoundry.checkpoint.common import build_model, load_tokenizer_if_present, read_json, read_safetensors
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

FORMAT = "llamafoundry"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.model"


def is_native(folder: Path) -> bool:
    config = folder / CONFIG
    return config.is_file() and read_json(config).get("format") == FORMAT


def save_native(
    folder: str | Path,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` (and its tokenizer) as a native folder, atomically: all of it or nothing."""
    folder = Path(folder)
    state = {
        name: t.detach().to(dtype or t.dtype).contiguous().cpu() for name, t in model.state_dict().items()
    }
    with fileio.atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        fileio.write_json(
            tmp / CONFIG,
            {"format": FORMAT, "llamafoundry_version": __version__, "model": model.cfg.to_dict()},
        )
        if tokenizer is not None:
            fileio.write_bytes(tmp / TOKENIZER, tokenizer.serialized())
    return folder


def load_native(
    folder: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    meta = read_json(folder / CONFIG)
    if not isinstance(meta.get("model"), dict):
        raise UserError(f"{folder / CONFIG} has no 'model' section; re-export the folder")
    cfg = ModelConfig.from_dict(meta["model"])
    if max_seq_len:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{weights} is missing; the folder is incomplete")
    model = build_model(cfg, read_safetensors(weights), weights, dtype)
    return model, load_tokenizer_if_present(folder), cfg
