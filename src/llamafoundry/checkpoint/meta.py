"""Meta's released layout: params.json + consolidated.NN.pth (one file per model-parallel rank).

Meta's code trained with fairscale model parallelism and saved each rank's shard as it was. To merge,
each tensor is concatenated along the dimension its parallel layer splits: column-parallel layers
(wq, wk, wv, w1, w3, output) along the output rows (dim 0), row-parallel layers (wo, w2) and the
parallel embedding along the input columns (dim 1). RMSNorm gains are replicated on every rank.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from llamafoundry import fileio
from llamafoundry.checkpoint.common import (
    build_model,
    load_tokenizer_if_present,
    read_json,
    read_torch,
    write_tokenizer,
)
from llamafoundry.checkpoint.native import is_unmarked_native
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
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


def config_from_params(params: dict, vocab_size: int, max_seq_len: int) -> ModelConfig:
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
    return ModelConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, **values)


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
    return params


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
    # params.json does not record the context; LLaMA-1 used 2048 (Llama-2: pass max_seq_len=4096).
    cfg = config_from_params(params, vocab_size, 2048 if max_seq_len is None else max_seq_len)
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
) -> Path:
    """Write Meta's layout with `n_shards` model-parallel files, atomically; an existing folder is
    replaced only with `overwrite`, and only an output of ours (`fileio.check_output`)."""
    folder = Path(folder)
    state = {name: t.detach().to(dtype or t.dtype).cpu() for name, t in model.state_dict().items()}
    with fileio.atomic_dir(
        folder, kind="Meta model", overwrite=overwrite, recognise=is_unmarked_native
    ) as tmp:
        for rank, shard in enumerate(split_state(state, n_shards)):
            torch.save(shard, tmp / f"consolidated.{rank:02d}.pth")
        fileio.write_json(tmp / PARAMS, params_from_config(model.cfg))
        if tokenizer is not None:
            write_tokenizer(tmp, tokenizer, "meta", model.cfg.max_seq_len)
    return folder
