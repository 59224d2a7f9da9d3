"""Meta's released layout: params.json + consolidated.NN.pth (one file per model-parallel rank).

Meta's code trained with fairscale model parallelism and saved each rank's shard as it was. To merge,
each tensor is concatenated along the dimension its parallel layer splits: column-parallel layers
(wq, wk, wv, w1, w3, output) along the output rows (dim 0), row-parallel layers (wo, w2) and the
parallel embedding along the input columns (dim 1). RMSNorm gains are replicated on every rank.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from llamafoundry import fileio
from llamafoundry.checkpoint.common import (
    build_model,
    load_tokenizer_if_present,
    model_tensors,
    read_torch,
    write_tokenizer,
)
from llamafoundry.checkpoint.native import is_unmarked_native
from llamafoundry.config import ModelConfig, RopeScaling
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_json
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

PARAMS = "params.json"
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")
_COLUMN_PARALLEL = (
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "feed_forward.w1.weight",
    "feed_forward.w3.weight",
    "output.weight",
)
_ROW_PARALLEL = ("attention.wo.weight", "feed_forward.w2.weight", "tok_embeddings.weight")


def split_dim(name: str) -> int | None:
    """The dimension along which Meta's model parallelism splits tensor `name` (None: replicated)."""
    if name.endswith(_COLUMN_PARALLEL):
        return 0
    if name.endswith(_ROW_PARALLEL):
        return 1
    return None


def shard_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if _SHARD.fullmatch(p.name)), key=lambda p: p.name)
    ranks = [int(_SHARD.fullmatch(p.name).group(1)) for p in files]
    if ranks != list(range(len(files))):
        raise UserError(f"{folder}: model-parallel shards {[p.name for p in files]} are not numbered 00..N-1")
    return files


def is_meta(folder: Path) -> bool:
    return (folder / PARAMS).is_file() and any(_SHARD.fullmatch(p.name) for p in folder.iterdir())


# Meta's Llama 3.1 reference fixes its rotary scaling in code (apply_scaling: factor 8, low 1, high 4,
# 8192 original positions) and params.json says only `use_scaled_rope`; Llama 3.2 1B/3B, the tied
# models, were trained with factor 32 (Meta's release notes, HF's converter), which no file records.
META_SCALING, META_SCALING_TIED = RopeScaling(factor=8.0), RopeScaling(factor=32.0)
LONG_CONTEXT = 131072  # Llama 3.1 and 3.2


def config_from_params(
    params: dict, vocab_size: int, max_seq_len: int | None, tied: bool = False
) -> ModelConfig:
    """Our config from params.json; the context, which params.json does not record, is `max_seq_len`, or
    else 2048 (LLaMA-1; pass 4096 for Llama-2) and 131,072 with scaled rotary embeddings (Llama 3.1)."""
    scaling = None
    if params.get("use_scaled_rope"):
        scaling = META_SCALING_TIED if tied else META_SCALING
        if params.get("rope_scaling_factor") is not None:
            scaling = dataclasses.replace(scaling, factor=params["rope_scaling_factor"])
    if max_seq_len is None:
        max_seq_len = 2048 if scaling is None else LONG_CONTEXT
    keys = (
        "dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "multiple_of",
        "ffn_dim_multiplier",
        "norm_eps",
        "rope_theta",
    )
    values = {k: params[k] for k in keys if params.get(k) is not None}
    return ModelConfig(
        vocab_size=vocab_size, max_seq_len=max_seq_len, rope_scaling=scaling, tie_embeddings=tied, **values
    )


def ffn_params(cfg: ModelConfig) -> tuple[int, float | None]:
    """multiple_of and ffn_dim_multiplier that make Meta's sizing rule give our SwiGLU hidden size.

    params.json cannot state the hidden size itself, and imported models (HF, llama2.c) may carry any.
    """
    candidates = [(m, cfg.ffn_dim_multiplier) for m in (cfg.multiple_of, 256, 128, 64, 32, 16, 8, 4, 2, 1)]
    candidates.append((1, cfg.ffn_hidden_dim / int(2 * 4 * cfg.dim / 3)))
    for multiple_of, multiplier in candidates:
        trial = cfg.replace(hidden_dim=None, multiple_of=multiple_of, ffn_dim_multiplier=multiplier)
        if trial.ffn_hidden_dim == cfg.ffn_hidden_dim:
            return multiple_of, multiplier
    raise UserError(
        f"no multiple_of/ffn_dim_multiplier in params.json gives the hidden size {cfg.ffn_hidden_dim}"
    )


def params_from_config(cfg: ModelConfig) -> dict:
    """params.json as Meta writes it; keys Meta's ModelArgs would not accept are left out."""
    multiple_of, multiplier = ffn_params(cfg)
    params = {
        "dim": cfg.dim,
        "multiple_of": multiple_of,
        "n_heads": cfg.n_heads,
        "n_layers": cfg.n_layers,
        "norm_eps": cfg.norm_eps,
        "vocab_size": cfg.vocab_size,
    }
    if cfg.n_kv_heads is not None:
        params["n_kv_heads"] = cfg.n_kv_heads
    if multiplier is not None:
        params["ffn_dim_multiplier"] = multiplier
    if cfg.rope_theta != 10000.0:
        params["rope_theta"] = cfg.rope_theta
    if cfg.rope_scaling is not None:
        params.update(_scaled_rope(cfg.rope_scaling))
    return params


def _scaled_rope(scaling: RopeScaling) -> dict:
    """params.json's keys for Llama 3.1's scaling: `use_scaled_rope`, and the factor where it is not 8
    (`rope_scaling_factor`, as later llama-models reads it). Meta's code fixes the other three numbers."""
    fixed = dataclasses.replace(scaling, factor=META_SCALING.factor)
    if fixed != META_SCALING:
        raise UserError(
            f"Meta's format fixes rope scaling at low_freq_factor 1, high_freq_factor 4 and 8192 original "
            f"positions; this model has {scaling}: export it as hf or native instead"
        )
    if scaling.factor == META_SCALING.factor:
        return {"use_scaled_rope": True}
    return {"use_scaled_rope": True, "rope_scaling_factor": scaling.factor}


def merge_shards(shards: list[dict[str, torch.Tensor]], files: list[Path]) -> dict[str, torch.Tensor]:
    """One state dict from the model-parallel shards read from `files` (which name them in errors)."""
    merged = {}
    for rank, shard in enumerate(shards[1:], start=1):
        if shard.keys() != shards[0].keys():
            differ = sorted(shard.keys() ^ shards[0].keys())
            raise UserError(
                f"{files[rank]} holds other tensors than {files[0].name} ({', '.join(differ[:4])})"
            )
    for name in shards[0]:
        if name == "rope.freqs":  # LLaMA-1 files carry the rotary table; we compute it
            continue
        dim = split_dim(name)
        parts = [shard[name] for shard in shards]
        try:
            merged[name] = parts[0] if dim is None or len(parts) == 1 else torch.cat(parts, dim=dim)
        except (RuntimeError, IndexError):  # shapes that do not line up along the split
            shapes = ", ".join(str(tuple(p.shape)) for p in parts)
            raise UserError(
                f"{files[0].parent}: the shards of {name} do not fit together ({shapes})"
            ) from None
    return merged


def split_state(state: dict[str, torch.Tensor], n_shards: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n_shards)]
    for name, tensor in state.items():
        dim = split_dim(name)
        if dim is not None and tensor.shape[dim] % n_shards:
            raise UserError(
                f"cannot split {name} {tuple(tensor.shape)} into {n_shards} model-parallel shards"
            )
        parts = [tensor] * n_shards if dim is None else torch.chunk(tensor, n_shards, dim=dim)
        for shard, part in zip(shards, parts, strict=True):
            shard[name] = part.contiguous().clone()
    return shards


def load_meta(
    folder: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    params = read_json(folder / PARAMS)
    files = shard_files(folder)
    state = merge_shards([read_torch(f) for f in files], files)
    if "tok_embeddings.weight" not in state or state["tok_embeddings.weight"].ndim != 2:
        raise UserError(f"{files[0]} has no tok_embeddings.weight matrix; it is not a Meta LLaMA checkpoint")
    vocab_size = state["tok_embeddings.weight"].shape[0]  # params.json says -1 in Meta's release
    # Meta's tied models (Llama 3.2 1B/3B) store the table twice; nothing else says they are tied.
    output = state.get("output.weight")
    tied = output is not None and torch.equal(output, state["tok_embeddings.weight"])
    cfg = config_from_params(params, vocab_size, max_seq_len, tied)
    model = build_model(cfg, state, folder, dtype)
    return model, load_tokenizer_if_present(folder), cfg


def save_meta(
    folder: str | Path,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    n_shards: int = 1,
    dtype: torch.dtype | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write Meta's layout with `n_shards` model-parallel files, atomically; an existing folder is
    replaced only with `overwrite`, and only an output of ours (`fileio.check_output`). A tied model's
    table is also stored as output.weight, as Meta's Llama 3.2 files hold it; `progress` shows a bar."""
    folder = Path(folder)
    params = params_from_config(model.cfg)  # before any work: a scaling Meta's format cannot hold
    tensors = model_tensors(model, progress=progress, tied_copy=True)
    state = {name: t.detach().to(dtype or t.dtype).cpu() for name, t in tensors}
    with fileio.atomic_dir(
        folder, kind="Meta model", overwrite=overwrite, recognise=is_unmarked_native
    ) as tmp:
        for rank, shard in enumerate(split_state(state, n_shards)):
            torch.save(shard, tmp / f"consolidated.{rank:02d}.pth")
        fileio.write_json(tmp / PARAMS, params)
        if tokenizer is not None:
            write_tokenizer(tmp, tokenizer, "meta", model.cfg.max_seq_len)
    return folder
