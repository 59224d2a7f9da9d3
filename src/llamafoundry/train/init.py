"""Continued pretraining: a run that starts from the weights of a model folder (`[model] init_from`).

`init_from` names anything `checkpoint.load_model` reads: our folder, Meta's, Hugging Face's, a llama2.c
file or a training checkpoint (`runs/X/checkpoints/step_N`). The run's model is the folder's:

- Shape: a recipe whose [model] names only `init_from` takes the folder's shape. A preset or shape keys
  beside it must describe the same model (the same weight shapes, norm_eps and rope_theta); the one
  field a recipe may change is max_seq_len, the context it trains at (rotary tables hold no weights).
- Tokenizer: the token shards must have been made with the folder's tokenizer (the manifest's sha256
  of it), so the run folder's tokenizer.model, copied from the shards, is the model's. A folder without
  a tokenizer (a llama2.c file, a bare Meta folder) takes the shards' one, whose vocabulary must fit.
- Weights: loaded into the freshly built (and possibly sharded) model through the Trainer's
  `init_state` hook, on every rank. A resumed run continues from its checkpoint and reads no weights
  here; it still reads the folder's config, so the folder must stay where the recipe says.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from llamafoundry.config import ModelConfig, get_preset
from llamafoundry.data.shards import read_manifest
from llamafoundry.errors import UserError

# What a recipe must agree on with the folder: ModelConfig fields and properties that fix the weights or
# what the model computes with them (kv_heads and ffn_hidden_dim: the same sizes are written many ways).
SHAPE_FIELDS = (
    "dim",
    "n_layers",
    "n_heads",
    "kv_heads",
    "ffn_hidden_dim",
    "vocab_size",
    "norm_eps",
    "rope_theta",
)


def folder_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of the model at `path`, read from its config files where the format has them
    (ours, Hugging Face's, a training checkpoint); Meta's params.json lacks the vocabulary and a llama2.c
    file is all header and weights, so those two are loaded (memory-mapped)."""
    from llamafoundry.checkpoint import detect_format, load_model
    from llamafoundry.checkpoint.dcp import PARTIAL_DIR, STATE_FILE, read_trainer_state
    from llamafoundry.checkpoint.hf import config_from_hf
    from llamafoundry.checkpoint.hub import resolve
    from llamafoundry.fileio import read_json

    path = resolve(path)
    if not path.exists():  # load_model's own message offers presets, which hold no weights to start from
        raise UserError(
            f"model.init_from {path} does not exist; give a model folder (ours, Meta's, Hugging Face's, a "
            "llama2.c .bin or runs/X/checkpoints/step_N), a hub id, or model.preset for a fresh model"
        )
    fmt = detect_format(path)
    if fmt == "native":
        meta = read_json(path / "config.json")
        if "quantization" in meta:
            raise UserError(
                f"model.init_from {path} is a quantized model; continue training from a floating-point folder"
            )
        if isinstance(meta.get("model"), dict):
            return ModelConfig.from_dict(meta["model"])
    if fmt == "hf":
        return config_from_hf(read_json(path / "config.json"), path)
    if fmt == "checkpoint" and (path / STATE_FILE).is_file() and not PARTIAL_DIR.fullmatch(path.name):
        saved = read_trainer_state(path).get("model_config")
        if isinstance(saved, dict):
            return ModelConfig.from_dict(saved)
    # Meta's and llama2.c's, and whatever is wrong with a folder: load_model says what.
    return load_model(path)[2]


def resolve_config(model: dict) -> ModelConfig:
    """The run's ModelConfig for a recipe's [model] table that names `init_from`: the folder's, with the
    recipe's max_seq_len; a UserError naming the fields where the recipe's preset or keys differ."""
    values = dict(model)
    source = values.pop("init_from")
    if not source or "\0" in source:  # "" would name the working directory; a NUL no path at all
        raise UserError(f"model.init_from {source!r} is not a path; give a model folder to start from")
    found = folder_config(source)
    if not values:
        return found
    preset = values.pop("preset", None)
    asked = (get_preset(preset) if preset else found).replace(**values)
    differ = [
        f"{name} {getattr(asked, name)} vs {getattr(found, name)}"
        for name in SHAPE_FIELDS
        if getattr(asked, name) != getattr(found, name)
    ]
    if differ:
        raise UserError(
            f"model.init_from {source} is another model than the recipe's [model] (recipe vs folder: "
            f"{'; '.join(differ)}); leave out the preset and shape keys to take the folder's"
        )
    return found.replace(max_seq_len=asked.max_seq_len)


def load_init_state(source: str | os.PathLike, cfg: ModelConfig, shards: Path) -> dict[str, torch.Tensor]:
    """The full state dict of the model at `source`, for the Trainer's `init_state`; a UserError when the
    token shards were made with another tokenizer than the model's."""
    from llamafoundry.checkpoint import load_model

    model, tokenizer, _ = load_model(source, max_seq_len=cfg.max_seq_len)
    if getattr(model, "quantization", None) is not None:
        raise UserError(
            f"model.init_from {source} is a quantized model; continue training from a floating-point folder"
        )
    if tokenizer is not None:
        recorded = read_manifest(shards).get("tokenizer_sha256")
        if hashlib.sha256(tokenizer.serialized()).hexdigest() != recorded:
            raise UserError(
                f"data.tokens {shards} was not made with model.init_from {source}'s tokenizer (the "
                "manifest's tokenizer_sha256 differs); tokenize the data with the model's tokenizer.model "
                "(llamafoundry data tokenize --tokenizer)"
            )
    return model.state_dict()
