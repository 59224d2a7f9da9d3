"""Our own model folder: config.json (the ModelConfig), model.safetensors, tokenizer.model; a finetuned
model also Hugging Face's tokenizer files, whose tokenizer_config.json carries its chat template.

A quantized model (`inference/quantize.py`) is the same folder whose config.json also says how each
linear layer is quantized ("quantization"), and whose safetensors hold the int8 / packed int4 weights
with their scales.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from llamafoundry import __version__, fileio
from llamafoundry.checkpoint.common import (
    build_model,
    load_tokenizer_if_present,
    model_tensors,
    read_safetensors,
    write_tokenizer,
)
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_json
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

FORMAT = "llamafoundry"
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.model"


def is_native(folder: Path) -> bool:
    config = folder / CONFIG
    return config.is_file() and read_json(config).get("format") == FORMAT


def is_unmarked_native(folder: Path) -> bool:
    """A native folder from before output markers, so ours to replace: our config.json (which names our
    format) and no file we would not write."""
    try:
        return fileio.holds_only(folder, {CONFIG, WEIGHTS, TOKENIZER}) and is_native(folder)
    except UserError:  # an unreadable config.json vouches for nothing
        return False


def save_native(
    folder: str | Path,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    dtype: torch.dtype | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write `model` (and its tokenizer) as a native folder, atomically: all of it or nothing.

    `dtype` converts the floating-point tensors; a quantized model's integer weights stay as they are.
    A tied model stores its embedding table once. The tokenizer is written in its own files, with its chat
    template (`tokenizer_files`). An existing folder is replaced only with `overwrite`, and only an output
    of ours (`fileio.check_output`). `progress` shows a bar of the tensors.
    """
    folder = Path(folder)
    state = {name: _stored(t, dtype) for name, t in model_tensors(model, progress=progress)}
    meta = {"format": FORMAT, "llamafoundry_version": __version__, "model": model.cfg.to_dict()}
    quantization = getattr(model, "quantization", None)
    if quantization is not None:
        from llamafoundry.inference.quantize import layer_kinds

        meta["quantization"] = {**quantization.to_dict(), "layers": layer_kinds(model)}
    with fileio.atomic_dir(
        folder, kind="llamafoundry model", overwrite=overwrite, recognise=is_unmarked_native
    ) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        fileio.write_json(tmp / CONFIG, meta)
        if tokenizer is not None:
            write_tokenizer(tmp, tokenizer, "native", model.cfg.max_seq_len)
    return folder


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.detach().contiguous().cpu()


def load_native(
    folder: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    meta = read_json(folder / CONFIG)
    if not isinstance(meta.get("model"), dict):
        raise UserError(f"{folder / CONFIG} has no 'model' section; re-export the folder")
    cfg = ModelConfig.from_dict(meta["model"])
    if max_seq_len is not None:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{weights} is missing; the folder is incomplete")
    skeleton = _quantized_skeleton(folder, meta["quantization"]) if "quantization" in meta else None
    model = build_model(cfg, read_safetensors(weights), weights, dtype, skeleton=skeleton)
    return model, load_tokenizer_if_present(folder), cfg


def _quantized_skeleton(folder: Path, section: object) -> Callable[[Transformer], Transformer]:
    """What turns a float model into the empty quantized model that the folder's weights fill."""
    from llamafoundry.inference.quantize import QuantConfig, quantized_skeleton

    kinds = section.get("layers", {}) if isinstance(section, dict) else None
    if not isinstance(kinds, dict):
        raise UserError(f"{folder / CONFIG} has a malformed 'quantization' section; quantize the model again")
    settings = {k: v for k, v in section.items() if k != "layers"}
    try:
        config = QuantConfig(**settings)
    except TypeError:
        raise UserError(
            f"{folder / CONFIG}: unknown quantization settings {sorted(settings)}; quantize the model again"
        ) from None
    return lambda model: quantized_skeleton(model, config, kinds)
