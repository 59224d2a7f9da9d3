"""Peak memory and step time of activation checkpointing modes: none, selective (Sec. 2.4), full.

Each mode runs in a fresh process (so its peak resident memory is its own); on CUDA the peak allocated
GPU memory is reported too. Same model, batch and gradients in every mode.

    python benchmarks/activation_checkpointing.py [--dim 512 --layers 8 --batch 4 --seq 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.parallel import apply_activation_checkpointing

MODES = ("none", "selective", "full")


def measure(mode: str, args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.dim // 64,
        vocab_size=args.vocab,
        multiple_of=256,
        max_seq_len=args.seq,
    )
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    apply_activation_checkpointing(model, mode)
    batch = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), device=device)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        lm_loss(model, batch).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {
        "mode": mode,
        "step_s": min(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode:
        print(json.dumps(measure(args.mode, args)))
        return
    print(
        f"dim {args.dim}, {args.layers} layers, batch {args.batch} x {args.seq} tokens, {args.threads} threads"
    )
    print(f"{'mode':<10} {'peak RSS MB':>12} {'peak CUDA MB':>13} {'fwd+bwd s':>10}")
    rows = []
    for mode in MODES:
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--mode", mode],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(row)
        cuda = f"{row['peak_cuda_mb']:.0f}" if "peak_cuda_mb" in row else "-"
        print(f"{mode:<10} {row['peak_rss_mb']:>12.0f} {cuda:>13} {row['step_s']:>10.2f}")
    base = rows[0]["peak_rss_mb"]
    for row in rows[1:]:
        print(
            f"{row['mode']}: {base - row['peak_rss_mb']:.0f} MB less peak memory than none, "
            f"{row['step_s'] / rows[0]['step_s']:.2f}x its step time"
        )


if __name__ == "__main__":
    main()
