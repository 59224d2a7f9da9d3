"""Hugging Face `LlamaForCausalLM` folders: config.json, (sharded) safetensors, tokenizer files.

HF's rotary embedding rotates the two *halves* of each head while Meta's rotates *adjacent* pairs, so
HF's conversion script permutes the rows of wq and wk; `to_hf` applies that permutation and `from_hf`
undoes it. Everything else is a renaming.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from llamafoundry import fileio
from llamafoundry.checkpoint.common import (
    build_model,
    load_tokenizer_if_present,
    model_tensors,
    read_safetensors,
    read_torch,
    write_tokenizer,
)
from llamafoundry.checkpoint.native import is_unmarked_native
from llamafoundry.checkpoint.tokenizer_files import generation_config
from llamafoundry.config import ModelConfig, RopeScaling
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_json
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

INDEX = "model.safetensors.index.json"
_LAYER_NAMES = {  # ours (Meta's) -> HF's, inside model.layers.N
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def permute_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta's adjacent-pair rows -> HF's half-split rows, per head (HF convert_llama_weights_to_hf)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        if name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = tensor
            continue
        _, layer, rest = name.split(".", 2)
        if rest == "attention.wq.weight":
            tensor = permute_to_hf(tensor, cfg.n_heads)
        elif rest == "attention.wk.weight":
            tensor = permute_to_hf(tensor, cfg.kv_heads)
        out[f"model.layers.{layer}.{_LAYER_NAMES[rest]}"] = tensor
    return out


def from_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    top = {hf: ours for ours, hf in _TOP_NAMES.items()}
    layer_names = {hf: ours for ours, hf in _LAYER_NAMES.items()}
    out = {}
    for name, tensor in state.items():
        if name in top:
            out[top[name]] = tensor
            continue
        parts = name.split(".", 3)
        if len(parts) != 4 or parts[:2] != ["model", "layers"] or parts[3] not in layer_names:
            out[name] = tensor  # reported as unexpected by build_model
            continue
        rest = layer_names[parts[3]]
        if rest == "attention.wq.weight":
            tensor = permute_from_hf(tensor, cfg.n_heads)
        elif rest == "attention.wk.weight":
            tensor = permute_from_hf(tensor, cfg.kv_heads)
        out[f"layers.{parts[2]}.{rest}"] = tensor
    return out


def is_hf(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    values = read_json(config)
    return values.get("model_type") == "llama" or "LlamaForCausalLM" in (values.get("architectures") or [])


def config_from_hf(values: dict, where: Path) -> ModelConfig:
    rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise UserError(f"{where}: rope_parameters in config.json should be an object, found {rope!r}")
    unsupported = []
    if values.get("attention_bias") or values.get("mlp_bias"):
        unsupported.append("biases")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        unsupported.append(f"rope_type {rope_type!r}")
    heads, dim = values.get("num_attention_heads"), values.get("hidden_size")
    head_dim = values.get("head_dim")
    # Numbers of the wrong type are ModelConfig's to report, below.
    numbers = isinstance(heads, int) and isinstance(dim, int) and heads and dim
    if head_dim is not None and numbers and head_dim != dim // heads:
        unsupported.append(f"head_dim {head_dim!r} != hidden_size / num_attention_heads")
    if values.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {values['hidden_act']!r}")
    if unsupported:
        raise UserError(
            f"{where}: this Llama variant is not the LLaMA architecture ({', '.join(unsupported)})"
        )
    try:
        kv_heads = values.get("num_key_value_heads") or heads
        return ModelConfig(
            dim=dim,
            n_layers=values["num_hidden_layers"],
            n_heads=heads,
            n_kv_heads=None if kv_heads == heads else kv_heads,
            vocab_size=values["vocab_size"],
            hidden_dim=values["intermediate_size"],
            norm_eps=values.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", values.get("rope_theta", 10000.0)),
            max_seq_len=values.get("max_position_embeddings", 2048),
            rope_scaling=_rope_scaling(rope, where) if rope_type == "llama3" else None,
            tie_embeddings=values.get("tie_word_embeddings", False),
        )
    except KeyError as exc:
        raise UserError(f"{where}: config.json lacks {exc.args[0]!r}") from None


def _rope_scaling(rope: dict, where: Path) -> RopeScaling:
    """Llama 3.1's scaling from rope_parameters (transformers 5) or rope_scaling (4.x): all four keys,
    as transformers requires them."""
    names = [f.name for f in dataclasses.fields(RopeScaling)]
    missing = [name for name in names if name not in rope]
    if missing:
        raise UserError(f"{where}: rope_type 'llama3' in config.json lacks {', '.join(map(repr, missing))}")
    return RopeScaling(**{name: rope[name] for name in names})


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map", {})
        files = weight_map.values() if isinstance(weight_map, dict) else [None]
        # Shards are files of this folder: a name like "../x" or "/x" would read outside it.
        if not all(isinstance(name, str) and name and Path(name).name == name for name in files):
            raise UserError(f"{index}: weight_map should map tensor names to shard files of the folder")
        state: dict[str, torch.Tensor] = {}
        for name in sorted(set(weight_map.values())):
            if not (folder / name).is_file():
                raise UserError(f"{folder}: shard {name} listed in {INDEX} is missing")
            state.update(read_safetensors(folder / name))
        return state
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return read_torch(folder / "pytorch_model.bin")
    raise UserError(f"{folder}: no model.safetensors, {INDEX} or pytorch_model.bin")


def load_hf(
    folder: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, Tokenizer | None, ModelConfig]:
    values = read_json(folder / "config.json")
    cfg = config_from_hf(values, folder)
    if max_seq_len is not None:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    state = read_hf_weights(folder)
    model = build_model(cfg, from_hf(state, cfg), folder, dtype)
    return model, load_tokenizer_if_present(folder), cfg


def hf_config(cfg: ModelConfig, dtype: torch.dtype, tokenizer: Tokenizer | None) -> dict:
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **dataclasses.asdict(cfg.rope_scaling)}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # transformers 4.x reads rope_theta and rope_scaling, 5.x rope_parameters; all are written.
        "rope_theta": cfg.rope_theta,
        "rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"} if cfg.rope_scaling else None,
        "rope_parameters": rope,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": tokenizer.bos_id if tokenizer else 1,
        "eos_token_id": tokenizer.eos_id if tokenizer else 2,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def save_hf(
    folder: str | Path,
    model: Transformer,
    tokenizer: Tokenizer | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a folder that `LlamaForCausalLM.from_pretrained` loads, sharded above `max_shard_bytes`; an
    existing folder is replaced only with `overwrite`, and only an output of ours (`fileio.check_output`).
    A tied model has no lm_head.weight (`tie_word_embeddings`); `progress` shows a bar of the tensors."""
    folder = Path(folder)
    cfg = model.cfg
    state = {
        n: t.detach().to(dtype or t.dtype).cpu().contiguous()
        for n, t in model_tensors(model, progress=progress)
    }
    hf_state = {n: t.contiguous() for n, t in to_hf(state, cfg).items()}
    out_dtype = next(iter(hf_state.values())).dtype
    shards = _shard(hf_state, max_shard_bytes)
    with fileio.atomic_dir(
        folder, kind="Hugging Face model", overwrite=overwrite, recognise=is_unmarked_native
    ) as tmp:
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in hf_state.values())
            fileio.write_json(tmp / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
        fileio.write_json(tmp / "config.json", hf_config(cfg, out_dtype, tokenizer))
        generation = generation_config(tokenizer) if tokenizer else {"bos_token_id": 1, "eos_token_id": 2}
        fileio.write_json(tmp / "generation_config.json", generation)
        if tokenizer is not None:
            write_tokenizer(tmp, tokenizer, "hf", cfg.max_seq_len)
    return folder


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards
