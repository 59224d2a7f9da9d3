"""Karpathy's llama2.c checkpoints (the legacy `.bin` format), e.g. the TinyStories models.

Layout (llama2.c `export.py`, legacy_export): seven little-endian int32 (dim, hidden_dim, n_layers,
n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored
separately), then float32 tensors: token embedding, all attention norms, all wq, wk, wv, wo, all ffn
norms, all w1, w2, w3, the final norm, the rotary tables (real, imag; skipped: we compute them), and the
classifier when unshared (a shared one is our tied embedding table). llama2.c's rotary pairs adjacent
channels, as Meta's does, so tensors map one to one onto ours. Its RMSNorm eps is 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llamafoundry.checkpoint.common import build_model
from llamafoundry.config import MAX_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_SEQ_LEN, MAX_VOCAB, ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer

HEADER_BYTES = 7 * 4


def read_header(path: Path) -> tuple[int, ...] | None:
    """The seven header ints if `path` looks like a llama2.c checkpoint, else None."""
    try:
        with path.open("rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError:
        return None
    if len(raw) < HEADER_BYTES:
        return None
    header = tuple(int(x) for x in np.frombuffer(raw, dtype="<i4"))
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = header
    plausible = (  # within ModelConfig's bounds
        0 < dim <= MAX_DIM
        and 0 < hidden <= MAX_HIDDEN
        and 0 < layers <= MAX_LAYERS
        and 0 < heads <= dim
        and 0 < kv_heads <= heads
        and 0 < abs(vocab) <= MAX_VOCAB
        and 0 < seq_len <= MAX_SEQ_LEN
    )
    return header if plausible else None


def is_llama2c(path: Path) -> bool:
    return path.is_file() and read_header(path) is not None


def _layout(cfg: ModelConfig, shared: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each tensor in file order; names ending in '*' repeat per layer."""
    d, h, kv = cfg.dim, cfg.ffn_hidden_dim, cfg.kv_heads * cfg.head_dim
    rope = (cfg.max_seq_len, cfg.head_dim // 2)
    layout = [
        ("tok_embeddings.weight", (cfg.vocab_size, d)),
        ("attention_norm.weight*", (d,)),
        ("attention.wq.weight*", (d, d)),
        ("attention.wk.weight*", (kv, d)),
        ("attention.wv.weight*", (kv, d)),
        ("attention.wo.weight*", (d, d)),
        ("ffn_norm.weight*", (d,)),
        ("feed_forward.w1.weight*", (h, d)),
        ("feed_forward.w2.weight*", (d, h)),
        ("feed_forward.w3.weight*", (h, d)),
        ("norm.weight", (d,)),
        ("rope.real", rope),
        ("rope.imag", rope),
    ]
    if not shared:
        layout.append(("output.weight", (cfg.vocab_size, d)))
    return layout


def load_llama2c(
    path: Path, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> tuple[Transformer, None, ModelConfig]:
    """The model of a legacy llama2.c checkpoint; `max_seq_len` replaces the header's context."""
    header = read_header(path)
    if header is None:
        raise UserError(f"{path} is not a llama2.c checkpoint (its 28-byte header is not plausible)")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = header
    shared = vocab > 0
    cfg = ModelConfig(
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=None if kv_heads == heads else kv_heads,
        vocab_size=abs(vocab),
        hidden_dim=hidden,
        norm_eps=1e-5,
        max_seq_len=seq_len,
        tie_embeddings=shared,
    )
    layout = _layout(cfg, shared)
    expected = sum(int(np.prod(shape)) * (layers if name.endswith("*") else 1) for name, shape in layout)
    # Checked in bytes before mapping: a file cut inside a float cannot be mapped as floats at all.
    found = path.stat().st_size - HEADER_BYTES
    if found != expected * 4:
        raise UserError(
            f"{path} holds {found} bytes after its header but its header implies {expected * 4} "
            f"({expected} floats); the file is truncated or not a legacy llama2.c checkpoint"
        )
    data = np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES)
    state: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in layout:
        count = int(np.prod(shape))
        for layer in range(layers if name.endswith("*") else 1):
            tensor = torch.from_numpy(np.array(data[offset : offset + count])).view(shape)
            offset += count
            if name.endswith("*"):
                state[f"layers.{layer}.{name[:-1]}"] = tensor
            elif not name.startswith("rope."):
                state[name] = tensor
    if max_seq_len is not None:
        cfg = cfg.replace(max_seq_len=max_seq_len)
    return build_model(cfg, state, path, dtype), None, cfg
