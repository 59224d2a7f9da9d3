"""One door for every model folder: `load_model` recognises the format by its files; `export` writes one
(or, for llama.cpp, one GGUF file)."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from llamafoundry import fileio
from llamafoundry.checkpoint.common import is_gguf_file, parse_dtype
from llamafoundry.checkpoint.dcp import is_checkpoint, load_checkpoint_model
from llamafoundry.checkpoint.hf import is_hf, load_hf, save_hf
from llamafoundry.checkpoint.hub import resolve
from llamafoundry.checkpoint.llama2c import is_llama2c, load_llama2c
from llamafoundry.checkpoint.meta import is_meta, load_meta, save_meta
from llamafoundry.checkpoint.native import is_native, is_unmarked_native, load_native, save_native
from llamafoundry.config import PRESETS, ModelConfig, get_preset
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, load_tokenizer

if TYPE_CHECKING:  # quantization lives with inference; it is imported only when a model is quantized
    from llamafoundry.inference.quantize import QuantConfig

FORMATS = ("native", "meta", "hf", "llama2c", "checkpoint")
EXPORT_FORMATS = ("native", "meta", "hf", "gguf")


def detect_format(path: str | os.PathLike) -> str:
    """'native', 'meta', 'hf', 'llama2c' or 'checkpoint' (a training run's step_N folder), from the files
    at `path` (or a hub id's cached snapshot); a UserError otherwise."""
    path = resolve(path)
    if not path.exists():
        raise UserError(
            f"{path} does not exist; give a model folder, a llama2.c .bin file or a preset "
            f"({', '.join(PRESETS)})"
        )
    if path.is_file():
        if is_llama2c(path):
            return "llama2c"
        raise UserError(f"{path} is a file of no known model format; give a model folder or a llama2.c .bin")
    if is_native(path):
        return "native"
    if is_meta(path):
        return "meta"
    if is_hf(path):
        return "hf"
    if is_checkpoint(path):
        return "checkpoint"
    if (path / "checkpoints").is_dir() and (path / "config.toml").is_file():
        raise UserError(
            f"{path} is a training run folder; give its model/ folder or one of its checkpoints/step_N folders"
        )
    raise UserError(
        f"{path} is not a model folder we know: expected config.json + model.safetensors (ours), "
        "params.json + consolidated.*.pth (Meta), a LlamaForCausalLM config.json (Hugging Face) or a "
        "training checkpoint (runs/X/checkpoints/step_N)"
    )


def load_model(
    path_or_preset: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | Tokenizer | None = None,
    quantize: QuantConfig | str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_seq_len: int | None = None,
    seed: int = 0,
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    """(model in eval mode, tokenizer or None, config) from a model folder of any known format
    (quantized native folders included), a Hugging Face hub id (`org/name`, from the cache first), or
    a randomly initialised model from a preset name (seeded).

    `tokenizer` (a tokenizer file or folder, or a Tokenizer) replaces or supplies the folder's; `quantize`
    ('int8', 'int4' or a QuantConfig) quantizes a floating-point model after loading; `max_seq_len`
    sets the context where the source lacks it or should be cut. A preset on `device="meta"` is its
    shape alone: no memory for weights.
    """
    torch_dtype = parse_dtype(dtype)
    name = str(path_or_preset)
    if not Path(name).exists() and name in PRESETS:
        model, tok, cfg = _from_preset(name, torch_dtype, max_seq_len, seed, device)
    else:
        model, tok, cfg = _from_path(resolve(name), torch_dtype, max_seq_len)
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        _check_vocab(tok, cfg, "pass the tokenizer the model was trained with")
    if quantize is not None:
        model = _quantize(model, quantize, name)
    if device is not None:
        model = model.to(device)
        model.reset_rope()
    return model.eval(), tok, cfg


def _from_preset(
    name: str,
    dtype: torch.dtype | None,
    max_seq_len: int | None,
    seed: int,
    device: str | torch.device | None,
) -> tuple[Transformer, None, ModelConfig]:
    """A preset's model, seeded; on the meta device (`device="meta"`) a shape without weights, built
    there at once: llama-65b in fp32 would take 260 GB."""
    cfg = get_preset(name)
    if max_seq_len is not None:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    meta = device is not None and torch.device(device).type == "meta"
    with torch.random.fork_rng(devices=[]), torch.device("meta") if meta else contextlib.nullcontext():
        torch.manual_seed(seed)
        model = Transformer(cfg)
    return (model.to(dtype) if dtype is not None else model), None, cfg


def _from_path(
    path: Path, dtype: torch.dtype | None, max_seq_len: int | None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    fmt = detect_format(path)
    if fmt == "llama2c":
        model, tokenizer, cfg = load_llama2c(path, dtype, max_seq_len)
    else:
        loader = {
            "native": load_native,
            "meta": load_meta,
            "hf": load_hf,
            "checkpoint": load_checkpoint_model,
        }[fmt]
        model, tokenizer, cfg = loader(path, dtype, max_seq_len)
    _check_vocab(tokenizer, cfg, f"{path}: the folder mixes files of different models")
    return model, tokenizer, cfg


def _quantize(model: Transformer, quantize: QuantConfig | str, name: str) -> Transformer:
    from llamafoundry.inference.quantize import QuantConfig, quantize_model

    if getattr(model, "quantization", None) is not None:
        raise UserError(f"{name} is already quantized; load it without quantizing again")
    return quantize_model(model, quantize if isinstance(quantize, QuantConfig) else QuantConfig(quantize))


def save_model(
    folder: str | os.PathLike,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    overwrite: bool = False,
    chat_template: str | None = None,
) -> Path:
    """Write our native folder (config.json, model.safetensors, the tokenizer's files); a quantized model
    keeps its quantization. A `chat_template` (Jinja) replaces the tokenizer's and goes with it into
    tokenizer_config.json (with Hugging Face's tokenizer files), where `load_chat_template` and
    transformers' AutoTokenizer read it. An existing folder is replaced only with `overwrite`, and
    only ours."""
    _check_vocab(tokenizer, model.cfg, "pass the tokenizer the model was trained with")
    if chat_template is not None:
        if tokenizer is None:
            raise UserError("a chat template is saved with its tokenizer; pass the tokenizer")
        tokenizer = copy.copy(tokenizer)  # the caller's tokenizer keeps its own template
        tokenizer.chat_template = chat_template
    return save_native(folder, model, tokenizer, parse_dtype(dtype), overwrite=overwrite)


def export(
    folder: str | os.PathLike,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    format: str = "native",
    *,
    dtype: str | torch.dtype | None = None,
    shards: int = 1,
    overwrite: bool = False,
    name: str | None = None,
    progress: bool = False,
) -> Path:
    """Write `model` as a folder of `format`: 'native', 'meta' (`shards` model-parallel files) or 'hf';
    or as llama.cpp's single file, 'gguf', whose `dtype` may also be 'f32', 'f16' or 'q8_0' and whose
    general.name is `name` (default: the file's). What is at `folder` already is replaced only with
    `overwrite`, and only an output of ours (`check_export`). `progress` shows a bar of the tensors."""
    _check_vocab(tokenizer, model.cfg, "pass the tokenizer the model was trained with")
    if format != "native" and getattr(model, "quantization", None) is not None:
        raise UserError(
            f"a quantized model is written only as our native folder, not {format!r}; "
            "convert the floating-point model instead"
        )
    if format == "gguf":
        try:
            from llamafoundry.checkpoint.gguf import save_gguf  # the gguf package is needed only here
        except ImportError:
            raise UserError("GGUF export needs the gguf package: pip install 'llamafoundry[gguf]'") from None
        kind = dtype if isinstance(dtype, str | None) else str(dtype).removeprefix("torch.")
        return save_gguf(folder, model, tokenizer, kind, name, overwrite=overwrite, progress=progress)
    torch_dtype = parse_dtype(dtype)
    if format == "native":
        return save_native(folder, model, tokenizer, torch_dtype, overwrite=overwrite, progress=progress)
    if format == "meta":
        return save_meta(
            folder, model, tokenizer, shards, torch_dtype, overwrite=overwrite, progress=progress
        )
    if format == "hf":
        return save_hf(folder, model, tokenizer, torch_dtype, overwrite=overwrite, progress=progress)
    raise UserError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def check_export(path: str | os.PathLike, format: str = "native", *, overwrite: bool = False) -> None:
    """The UserError `export` to `path` in `format` would give for what is there, now, before the work:
    a GGUF export replaces only a GGUF file, a folder export only a model folder of ours."""
    if format == "gguf":
        fileio.check_output(path, overwrite=overwrite, folder=False, recognise=is_gguf_file)
    else:
        fileio.check_output(path, overwrite=overwrite, recognise=is_unmarked_native)


def _check_vocab(tokenizer: Tokenizer | None, cfg: ModelConfig, fix: str) -> None:
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary only "
            f"{cfg.vocab_size}: {fix}"
        )
