"""Models for inference: any folder `load_model` reads, plus quantized folders, with a tokenizer override.

A quantized folder is our native layout (config.json, model.safetensors, tokenizer.model) whose
config.json also says how each linear layer is quantized, and whose safetensors hold the int8 / packed
int4 weights with their scales.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from llamafoundry import __version__, fileio
from llamafoundry.checkpoint import load_model
from llamafoundry.checkpoint.common import read_json, read_safetensors
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.inference.quantize import QuantConfig, layer_kinds, quantize_model, quantized_skeleton
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

FORMAT = "llamafoundry"  # the native format's marker, which a quantized folder shares
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.model"


def is_quantized_folder(path: str | os.PathLike) -> bool:
    config = Path(path) / CONFIG
    return config.is_file() and "quantization" in read_json(config)


def load_for_inference(
    path_or_preset: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    quantize: QuantConfig | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    """(model in eval mode, tokenizer or None, config) from any model folder, quantized ones included.

    `tokenizer` (a tokenizer.model path) replaces or supplies the folder's tokenizer; `quantize`
    quantizes a floating-point model after loading.
    """
    if is_quantized_folder(path_or_preset):
        if quantize is not None:
            raise UserError(f"{path_or_preset} is already quantized; load it without quantizing again")
        model, tok, cfg = _load_quantized(Path(path_or_preset), device)
    else:
        model, tok, cfg = load_model(path_or_preset, dtype=dtype, device=device)
        if quantize is not None:
            quantize_model(model, quantize)
    if tokenizer is not None:
        tok = Tokenizer(tokenizer)
    if tok is not None and tok.vocab_size > cfg.vocab_size:
        raise UserError(
            f"the tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size}; "
            "pass the tokenizer the model was trained with"
        )
    return model.eval(), tok, cfg


def save_quantized(folder: str | os.PathLike, model: Transformer, tokenizer: Tokenizer | None = None) -> Path:
    """Write a quantized model as a folder, atomically."""
    config = getattr(model, "quantization", None)
    if config is None:
        raise UserError("the model is not quantized; quantize it first")
    folder = Path(folder)
    state = {n: t.detach().contiguous().cpu() for n, t in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "llamafoundry_version": __version__,
        "model": model.cfg.to_dict(),
        "quantization": {**config.to_dict(), "layers": layer_kinds(model)},
    }
    with fileio.atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        fileio.write_json(tmp / CONFIG, meta)
        if tokenizer is not None:
            fileio.write_bytes(tmp / TOKENIZER, tokenizer.serialized())
    return folder


def _load_quantized(
    folder: Path, device: str | torch.device | None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    meta = read_json(folder / CONFIG)
    quant = dict(meta["quantization"])
    kinds = quant.pop("layers", {})
    if not isinstance(meta.get("model"), dict) or not isinstance(kinds, dict):
        raise UserError(f"{folder / CONFIG} is not a quantized model config; quantize the model again")
    cfg = ModelConfig.from_dict(meta["model"])
    config = QuantConfig(**quant)
    state = read_safetensors(folder / WEIGHTS) if (folder / WEIGHTS).is_file() else None
    if state is None:
        raise UserError(f"{folder / WEIGHTS} is missing; the folder is incomplete")
    with torch.device("meta"):
        model = quantized_skeleton(Transformer(cfg), config, kinds)
    expected = model.state_dict()
    wrong = sorted(set(expected) ^ set(state))
    wrong += [n for n in expected if n in state and state[n].shape != expected[n].shape]
    if wrong:
        raise UserError(
            f"{folder}: weights do not fit the quantized config (e.g. {wrong[0]}); quantize again"
        )
    model.load_state_dict(state, strict=True, assign=True)
    if device is not None:
        model = model.to(device)
    model.reset_rope()
    tokenizer = Tokenizer(folder / TOKENIZER) if (folder / TOKENIZER).is_file() else None
    return model, tokenizer, cfg
