"""What a training run reports: loss, learning rate, grad norm, tokens/s, MFU, energy; JSONL + TensorBoard.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOPs / the device's peak. On GPUs the
peak is the datasheet's dense number; on CPUs there is no datasheet number for "our two cores", so we
measure the peak: the best of a few large matmuls in the run's precision.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch

from llamafoundry.footprint import CPU_CORE_POWER_W
from llamafoundry.hardware import GPUS, gpu_named

# Perplexity is reported up to e^50 (~5e21): past that it only says "diverged", and math.exp raises
# OverflowError past ~709 nats, which would end a run over a number in its log.
MAX_PERPLEXITY_LOSS = 50.0
# A GPU missing from hardware.py is accounted at the power of the paper's own GPU.
UNKNOWN_GPU = GPUS["a100-80gb"]


def perplexity(loss: float) -> float:
    """exp(loss), for losses up to MAX_PERPLEXITY_LOSS (NaN stays NaN)."""
    return math.exp(min(loss, MAX_PERPLEXITY_LOSS))


@functools.cache
def measure_matmul_flops(
    dtype: torch.dtype, device: str | torch.device = "cpu", size: int = 2048, repeats: int = 5
) -> float:
    """Best achieved FLOP/s of a square matmul of `size` in `dtype` on `device`, measured once per process
    (it takes the CPU for 0.5-2 s, and every Trainer asks)."""
    # A generator of its own: the global one is the run's (dropout, a resumed run's restored state).
    rng = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=rng).to(dtype)
    b = torch.randn(size, size, device=device, generator=rng).to(dtype)
    torch.mm(a, b)  # warm up kernels and caches
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The datasheet peak (hardware.py) for a known GPU, else the measured matmul peak."""
    gpu = gpu_named(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if gpu is None:
        return measure_matmul_flops(dtype, device)
    return gpu.peak_bf16_flops if dtype == torch.bfloat16 else gpu.peak_fp32_flops


def device_power_w(device: torch.device) -> float:
    """The power one device draws, for the energy estimate: its board power, or busy CPU cores."""
    if device.type == "cuda":
        return (gpu_named(torch.cuda.get_device_name(device)) or UNKNOWN_GPU).power_w
    return CPU_CORE_POWER_W * torch.get_num_threads()


def _sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class MetricsLogger:
    """Appends one JSON object per record to `metrics.jsonl`, and mirrors scalars to TensorBoard if asked
    and installed."""

    def __init__(self, folder: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a run killed mid-write may leave a torn last line, which is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss_curve(records: list[dict], path: Path, title: str = "") -> None:
    """Train loss (raw and smoothed) and validation loss against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llamafoundry import fileio

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(8, 5))
    if train:
        tokens = [r["tokens"] / 1e6 for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(tokens, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss")
        ax.plot(tokens, ema(losses), color="tab:blue", label="train loss (EMA)")
    if val:
        ax.plot(
            [r["tokens"] / 1e6 for r in val],
            [r["loss"] for r in val],
            "o-",
            color="tab:orange",
            label="validation loss",
        )
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def ema(values: list[float]) -> list[float]:
    """Bias-corrected exponential moving average, over about a twentieth of the run."""
    beta = 1.0 - max(0.02, min(0.3, 20.0 / len(values)))
    out, current = [], 0.0
    for t, v in enumerate(values, start=1):
        current = beta * current + (1 - beta) * v
        out.append(current / (1 - beta**t))
    return out
