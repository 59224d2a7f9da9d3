"""Model shapes: the `ModelConfig` dataclass and its named presets (paper Table 2, Llama-2, Llama-3, small
CPU sizes).

Nothing else lives here: no weights, no I/O. `model.py` imports this file and nothing else of ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

from llamafoundry.errors import UserError

# Upper bounds on a shape. The largest released LLaMA (Llama 3.1 405B) has dim 16,384, 126 layers, a
# SwiGLU of 53,248 and 128,256 tokens; the longest context with plain rotary embeddings is Gradient's
# Llama-3-8B 4194k. Beyond these a config is a typo or an attack: the model is built layer by layer and
# its rotary tables for every position before any weight is read (a context of 1e11 asked for 400 GB).
MAX_DIM, MAX_LAYERS, MAX_HIDDEN, MAX_VOCAB, MAX_SEQ_LEN = 1 << 16, 1024, 1 << 18, 1 << 20, 1 << 22
_LIMITS = {
    "dim": MAX_DIM,
    "n_layers": MAX_LAYERS,
    "hidden_dim": MAX_HIDDEN,
    "multiple_of": MAX_HIDDEN,
    "vocab_size": MAX_VOCAB,
    "max_seq_len": MAX_SEQ_LEN,
}
_REALS = ("norm_eps", "rope_theta", "ffn_dim_multiplier")


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1's rotary frequency scaling (HF's rope_type "llama3"; Meta's `use_scaled_rope`).

    Wavelengths shorter than original_max_position_embeddings / high_freq_factor keep their frequency,
    those longer than original_max_position_embeddings / low_freq_factor are slowed by `factor`, and the
    band between is interpolated: the context grows without retraining the high frequencies.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            value = getattr(self, name)
            if type(value) is int:
                object.__setattr__(self, name, float(value))
        problem = self._problem()
        if problem:
            raise UserError(f"invalid rope_scaling: {problem}")

    def _problem(self) -> str | None:
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            value = getattr(self, name)
            if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
                return f"{name} must be a finite number > 0, got {value!r}"
        original = self.original_max_position_embeddings
        if not isinstance(original, int) or isinstance(original, bool) or not 0 < original <= MAX_SEQ_LEN:
            return (
                f"original_max_position_embeddings must be an integer in 1..{MAX_SEQ_LEN:,}, got {original!r}"
            )
        if self.high_freq_factor <= self.low_freq_factor:  # the interpolation divides by their difference
            return (
                f"high_freq_factor {self.high_freq_factor} must exceed low_freq_factor {self.low_freq_factor}"
            )
        return None

    @classmethod
    def from_dict(cls, values: dict) -> RopeScaling:
        return cls(**_known_keys(cls, values, "rope_scaling"))


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a LLaMA-architecture transformer (names follow Meta's `params.json`)."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: multi-head attention (LLaMA-1); fewer: grouped-query (Llama-2 70B)
    vocab_size: int = 32000
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None  # Llama-2 70B scales the SwiGLU hidden size by 1.3
    hidden_dim: int | None = None  # explicit SwiGLU size, for imported models whose size no rule gives
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    rope_scaling: RopeScaling | None = None  # Llama 3.1 and 3.2 stretch the rotary frequencies
    tie_embeddings: bool = False  # Llama 3.2 1B/3B: the output projection is the embedding table

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):  # from config.json or a recipe's TOML table
            object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(self.rope_scaling))
        for name in _REALS:  # an int (JSON's 10000) is the float it stands for; a bool or "1e-6" is not
            value = getattr(self, name)
            if type(value) is int:
                with contextlib.suppress(OverflowError):  # beyond any float: reported below
                    object.__setattr__(self, name, float(value))
        problem = self._problem()
        if problem:
            raise UserError(f"invalid model config: {problem}")

    def _problem(self) -> str | None:
        return self._field_problem() or self._shape_problem()

    def _field_problem(self) -> str | None:
        """Each field on its own: a string "4096" where a number belongs is an error, not a silent cast."""
        positive = ["dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"]
        positive += [name for name in ("n_kv_heads", "hidden_dim") if getattr(self, name) is not None]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                return f"{name} must be a positive integer, got {value!r}"
            if value > _LIMITS.get(name, value):
                return (
                    f"{name} must be at most {_LIMITS[name]:,} (far above any released LLaMA), got {value:,}"
                )
        for name in _REALS:
            value = getattr(self, name)
            if value is None and name == "ffn_dim_multiplier":
                continue
            if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
                return f"{name} must be a finite number > 0, got {value!r}"
        if not isinstance(self.tie_embeddings, bool):
            return f"tie_embeddings must be true or false, got {self.tie_embeddings!r}"
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            return f"rope_scaling must be a table of Llama 3 scaling factors, got {self.rope_scaling!r}"
        return None

    def _shape_problem(self) -> str | None:
        """The fields together: heads that split the width, a hidden layer that exists."""
        if self.dim % self.n_heads:
            return f"dim {self.dim} is not divisible by n_heads {self.n_heads}"
        if self.n_heads % self.kv_heads:
            return f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}"
        if self.head_dim % 2:
            return f"head_dim {self.head_dim} must be even for rotary embeddings"
        if not 1 <= self.ffn_hidden_dim <= MAX_HIDDEN:
            return (
                f"multiple_of {self.multiple_of} and ffn_dim_multiplier {self.ffn_dim_multiplier} give a "
                f"SwiGLU of {self.ffn_hidden_dim:,} units; it must have 1 to {MAX_HIDDEN:,}"
            )
        return None

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """Sec. 2.2: SwiGLU with 2/3 * 4d hidden units, rounded up to `multiple_of` (Meta's released rule)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def replace(self, **changes: object) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        return cls(**_known_keys(cls, values, "model config"))


def _known_keys(cls: type, values: dict, what: str) -> dict:
    """`values`, or a UserError naming the keys that are no field of the dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown {what} keys {unknown}; known keys are {sorted(known)}")
    return values


def _paper(dim: int, n_layers: int, n_heads: int) -> ModelConfig:
    """Table 2 of the paper; multiple_of 256 and eps 1e-6 as in Meta's released params.json."""
    return ModelConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, multiple_of=256, norm_eps=1e-6)


def _llama2(dim: int, n_layers: int, n_heads: int, **kw: object) -> ModelConfig:
    """Llama-2 (Touvron et al., 2023b): 4096 context, eps 1e-5; 70B uses grouped-query attention."""
    return ModelConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, norm_eps=1e-5, max_seq_len=4096, **kw)


def _llama3(
    dim: int, n_layers: int, n_heads: int, multiple_of: int, ffn_dim_multiplier: float, **kw: object
) -> ModelConfig:
    """Llama 3 (Grattafiori et al., 2024): a 128K-token vocabulary, grouped-query attention with 8
    key/value heads, rope_theta 500,000; shapes as in Meta's released params.json."""
    return ModelConfig(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=8,
        vocab_size=128256,
        multiple_of=multiple_of,
        ffn_dim_multiplier=ffn_dim_multiplier,
        norm_eps=1e-5,
        rope_theta=500000.0,
        **kw,
    )


# Llama 3.1 and 3.2: 131,072 positions by stretching the rotary frequencies of an 8,192-token model.
_LONG_CONTEXT = {"max_seq_len": 131072, "rope_scaling": RopeScaling(factor=8.0)}
_LLAMA32 = {"max_seq_len": 131072, "rope_scaling": RopeScaling(factor=32.0), "tie_embeddings": True}


def _small(dim: int, n_layers: int, n_heads: int, vocab_size: int, max_seq_len: int) -> ModelConfig:
    """CPU sizes for tests, the quickstart and benchmarks (counts include the untied output layer)."""
    return ModelConfig(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        vocab_size=vocab_size,
        multiple_of=32,
        norm_eps=1e-5,
        max_seq_len=max_seq_len,
    )


PRESETS: dict[str, ModelConfig] = {
    "llama-7b": _paper(4096, 32, 32),
    "llama-13b": _paper(5120, 40, 40),
    "llama-33b": _paper(6656, 60, 52),
    "llama-65b": _paper(8192, 80, 64),
    "llama2-7b": _llama2(4096, 32, 32),
    "llama2-13b": _llama2(5120, 40, 40),
    "llama2-70b": _llama2(8192, 80, 64, n_kv_heads=8, ffn_dim_multiplier=1.3, multiple_of=4096),
    "llama3-8b": _llama3(4096, 32, 32, 1024, 1.3, max_seq_len=8192),
    "llama3.1-8b": _llama3(4096, 32, 32, 1024, 1.3, **_LONG_CONTEXT),
    "llama3.1-70b": _llama3(8192, 80, 64, 4096, 1.3, **_LONG_CONTEXT),
    "llama3.1-405b": _llama3(16384, 126, 128, 4096, 1.2, **_LONG_CONTEXT),
    "llama3.2-1b": _llama3(2048, 16, 32, 256, 1.5, **_LLAMA32),
    "llama3.2-3b": _llama3(3072, 28, 24, 256, 1.0, **_LLAMA32),
    "llama-1m": _small(128, 4, 4, vocab_size=512, max_seq_len=256),
    "llama-15m": _small(320, 8, 8, vocab_size=8192, max_seq_len=512),
    "llama-110m": _small(768, 12, 12, vocab_size=16384, max_seq_len=1024),
    # A ~1B model for one-GPU checks, shaped like TinyLlama-1.1B (grouped-query attention, 2048 context).
    "llama-1b": ModelConfig(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632, norm_eps=1e-5),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called `name`, or a UserError that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def num_params(cfg: ModelConfig) -> int:
    """Exact parameter count, in closed form (no biases; a tied embedding table counted once)."""
    kv_dim = cfg.kv_heads * cfg.head_dim
    attention = cfg.dim * cfg.dim * 2 + cfg.dim * kv_dim * 2  # wq, wo; wk, wv
    feed_forward = 3 * cfg.dim * cfg.ffn_hidden_dim  # w1, w2, w3
    norms = 2 * cfg.dim
    embeddings = (1 if cfg.tie_embeddings else 2) * cfg.vocab_size * cfg.dim  # tok_embeddings + output
    return cfg.n_layers * (attention + feed_forward + norms) + embeddings + cfg.dim


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward), the PaLM appendix B convention used for MFU.

    6 FLOPs per parameter that multiplies an activation (the embedding lookup does not), plus the
    attention score and value products, 12 * n_layers * dim * seq_len, counted without the causal
    saving as PaLM, nanoGPT and torchtitan do.
    """
    seq_len = cfg.max_seq_len if seq_len is None else seq_len
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * cfg.dim * seq_len


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that multiply an activation: all but the token embedding table, a lookup. The N of
    C = 6ND, and the size the scaling tools fit (at small sizes the table would swamp the count). A tied
    table is also the output projection, which multiplies: it counts."""
    return num_params(cfg) - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)


def format_params(n: int) -> str:
    """One decimal, truncated as the paper reports sizes (65,285,660,672 parameters -> 65.2B)."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            tenths = n * 10 // scale
            return f"{tenths // 10}.{tenths % 10}{unit}"
    return str(n)
