"""What every model-folder format shares: reading weight files safely and building a model from them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from llamafoundry import fileio
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, find_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def is_gguf_file(path: Path) -> bool:
    """Whether `path` is a GGUF file (by its magic), the one kind of file a GGUF export replaces."""
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, memory-mapped; a damaged file is a UserError naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated: copy or export it again"
        ) from None


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A PyTorch pickle of tensors, loaded with weights_only=True (no code runs) and memory-mapped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise UserError(
            f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it may be truncated"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict of tensors")
    for name, value in state.items():
        if not isinstance(name, str):
            raise UserError(f"{path} does not hold a state dict of tensors (it has a key {name!r})")
        if not isinstance(value, torch.Tensor):
            raise UserError(
                f"{path} does not hold a state dict of tensors ({name} is a {type(value).__name__})"
            )
    return state


def build_model(
    cfg: ModelConfig,
    state: dict[str, torch.Tensor],
    where: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    skeleton: Callable[[Transformer], Transformer] | None = None,
) -> Transformer:
    """A Transformer holding exactly `state`, checked name by name and shape by shape.

    The model is built on the meta device and takes the loaded tensors as they are (no random init,
    no second copy of the weights). `skeleton` reshapes the empty model first (a quantized model's
    layers); `dtype` converts the floating-point tensors only. A tied model (`cfg.tie_embeddings`) needs
    only tok_embeddings.weight; a stored output.weight (Meta's files hold a copy) is not read.
    """
    with torch.device("meta"):
        model = Transformer(cfg)
        if skeleton is not None:
            model = skeleton(model)
    expected = model.state_dict()
    tied = model.output.weight is model.tok_embeddings.weight  # not once quantized: int8 has its own copy
    if tied:
        expected.pop("output.weight")
        state = {name: t for name, t in state.items() if name != "output.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"missing {_few(missing)}" if missing else "",
                f"unexpected {_few(unexpected)}" if unexpected else "",
            )
            if part
        )
        raise UserError(f"{where}: weights do not fit the config ({detail})")
    for name, tensor in expected.items():
        got = tuple(state[name].shape)
        if got != tuple(tensor.shape):
            raise UserError(
                f"{where}: tensor {name} has shape {got}, but the config expects {tuple(tensor.shape)}"
            )
    if dtype is not None:
        state = {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}
    if tied:  # one Parameter under both names: assigning it keeps the two modules tied
        table = nn.Parameter(state["tok_embeddings.weight"])
        state = {**state, "tok_embeddings.weight": table, "output.weight": table}
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_rope()
    return model


def model_tensors(
    model: Transformer, *, progress: bool = False, tied_copy: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the model's state dict for a writer, with a bar of tensors when `progress`. A
    tied output projection is the embedding table, left out (safetensors refuses a tensor twice) unless
    `tied_copy` asks for it under its own name, as Meta's files store it."""
    state = model.state_dict()
    if model.output.weight is model.tok_embeddings.weight and not tied_copy:
        del state["output.weight"]
    yield from tqdm(state.items(), desc="writing tensors", unit="tensor", disable=not progress)


def load_tokenizer_if_present(folder: Path) -> Tokenizer | None:
    """The folder's tokenizer of any kind, with its chat template (`find_tokenizer`), or None."""
    return find_tokenizer(folder)


def write_tokenizer(folder: Path, tokenizer: Tokenizer, fmt: str, max_seq_len: int) -> None:
    """Write `tokenizer` (and its chat template) into `folder` as a folder of `fmt` holds it."""
    from llamafoundry.checkpoint.tokenizer_files import tokenizer_files

    for name, content in tokenizer_files(tokenizer, fmt, max_seq_len).items():
        if isinstance(content, bytes):
            fileio.write_bytes(folder / name, content)
        else:
            fileio.write_json(folder / name, content)


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def merge_adapters(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A state dict with peft's LoRA adapters (`X.base_layer.weight`, `X.lora_A.default.weight`,
    `X.lora_B.default.weight`) folded into plain weights: W + scaling B A, in float32, stored in W's dtype.
    The names are the plain model's (finetune/lora.py makes such models; their checkpoints hold them)."""
    merged = {}
    for name, tensor in state.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if ".base_layer." in name:
            layer = name.partition(".base_layer.")[0]
            a, b = state[f"{layer}.lora_A.default.weight"], state[f"{layer}.lora_B.default.weight"]
            tensor = (tensor.float() + scaling * (b.float() @ a.float())).to(tensor.dtype)
            name = name.replace(".base_layer.", ".")
        merged[name] = tensor
    return merged
