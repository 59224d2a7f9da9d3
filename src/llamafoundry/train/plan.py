"""Planning a run on paper: memory per GPU, tokens/s/GPU, days to a token budget, energy and CO2.

Memory (bytes per GPU) for a (dp x tp) layout with FSDP2 and tensor + sequence parallelism:
- model states: fp32 weights, fp32 gradients and AdamW's two moments, 16 bytes per parameter, sharded
  over all dp x tp ranks; plus two blocks' bf16 weights gathered at once (the one computing and the
  prefetched next one);
- activations kept for the backward, per layer and token, in units of the model width h (bytes, bf16
  matmul outputs, fp32 residual): ~50 h without checkpointing (flash attention stores no s x s scores),
  ~27 h with selective checkpointing (matmul and attention outputs only: q, k, v, attention, wo, the
  SwiGLU gate/up/down and the block input), 4 h with full checkpointing (the block input) plus one
  block's ~50 h while it is recomputed; divided by tp (sequence parallel shards the rest);
- the logits: bf16, and fp32 inside the cross-entropy.

Throughput: tokens/s/GPU = MFU x peak bf16 FLOP/s / training FLOPs per token (PaLM convention, see
config.flops_per_token). The default MFU of 0.5 is what the paper's 380 tokens/s/GPU for 65B on
A100-80GB implies under that convention. Full checkpointing recomputes the forward: 3/4 of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamafoundry.config import ModelConfig, flops_per_token, num_params
from llamafoundry.errors import UserError
from llamafoundry.footprint import PAPER_TABLE_15, Footprint, footprint
from llamafoundry.hardware import GPUS

# Section 2 and Table 15 of the paper, for the side-by-side.
PAPER_TOKENS = {"llama-7b": 1.0e12, "llama-13b": 1.0e12, "llama-33b": 1.4e12, "llama-65b": 1.4e12}
_TABLE_15 = {model.lower(): row for model, row in PAPER_TABLE_15.items()}  # "llama-7b": (hours, MWh, t)
PAPER_GPU_HOURS = {preset: row[0] for preset, row in _TABLE_15.items()}
PAPER_MWH = {preset: row[1] for preset, row in _TABLE_15.items()}
PAPER_TCO2 = {preset: row[2] for preset, row in _TABLE_15.items()}
PAPER_65B = {"tokens_per_s_per_gpu": 380, "days": 21}

_ACTIVATION_H_BYTES = {"none": 50, "selective": 27, "full": 4}
_RECOMPUTE_THROUGHPUT = {"none": 1.0, "selective": 1.0, "full": 0.75}


@dataclass(frozen=True)
class Plan:
    gpus: int
    dp: int
    tp: int
    checkpointing: str
    memory_gb: dict[str, float]
    tokens_per_s_per_gpu: float
    days: float
    footprint: Footprint

    @property
    def total_memory_gb(self) -> float:
        return sum(self.memory_gb.values())


def memory_gb(cfg: ModelConfig, dp: int, tp: int, checkpointing: str, seq_len: int, micro_batch: int) -> dict:
    """Estimated memory per GPU (GB) by kind, for the layout and checkpointing mode."""
    n = num_params(cfg)
    block = (num_params(cfg) - 2 * cfg.vocab_size * cfg.dim - cfg.dim) / cfg.n_layers
    tokens = seq_len * micro_batch
    per_layer = _ACTIVATION_H_BYTES[checkpointing] * cfg.dim * tokens / tp
    activations = per_layer * cfg.n_layers
    if checkpointing == "full":
        activations += _ACTIVATION_H_BYTES["none"] * cfg.dim * tokens / tp
    return {
        "model states (fp32 weights, grads, AdamW)": n * 16 / (dp * tp) / 1e9,
        "gathered bf16 blocks": 2 * block * 2 / tp / 1e9,
        "activations": activations / 1e9,
        "logits": tokens * cfg.vocab_size * (2 + 4) / tp / 1e9,
    }


def make_plan(
    cfg: ModelConfig,
    gpus: int,
    gpu: str,
    *,
    tokens: float,
    tp: int | None = None,
    checkpointing: str = "selective",
    mfu: float = 0.5,
    seq_len: int | None = None,
    micro_batch: int = 1,
) -> Plan:
    """The plan for training `cfg` on `tokens` tokens with `gpus` GPUs of kind `gpu`."""
    if gpu not in GPUS:
        raise UserError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    if checkpointing not in _ACTIVATION_H_BYTES:
        raise UserError(
            f"checkpointing must be one of {', '.join(_ACTIVATION_H_BYTES)}, got {checkpointing!r}"
        )
    if not 0 < mfu <= 1:
        raise UserError(f"MFU must be in (0, 1], got {mfu}")
    spec = GPUS[gpu]
    seq_len = seq_len or cfg.max_seq_len
    candidates = (
        [tp] if tp else [t for t in (1, 2, 4, 8, 16) if cfg.n_heads % t == 0 and cfg.kv_heads % t == 0]
    )
    for degree in candidates:
        if gpus % degree:
            raise UserError(f"tp {degree} does not divide {gpus} GPUs")
        memory = memory_gb(cfg, gpus // degree, degree, checkpointing, seq_len, micro_batch)
        if sum(memory.values()) <= 0.9 * spec.memory_gb or degree == candidates[-1]:
            break
    rate = mfu * spec.peak_bf16_flops / flops_per_token(cfg, seq_len) * _RECOMPUTE_THROUGHPUT[checkpointing]
    seconds = tokens / (rate * gpus)
    return Plan(
        gpus,
        gpus // degree,
        degree,
        checkpointing,
        memory,
        rate,
        seconds / 86400,
        footprint(gpus * seconds / 3600, spec.power_w),
    )
