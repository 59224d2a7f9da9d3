"""What a checkpoint's manifest costs: a DCP save of a model and its AdamW state, the manifest we write
(every file's size, the sha256 of `.metadata` and of the pickled regions of the `.distcp` files), its
check before a load, and the alternative of hashing every byte.

    python benchmarks/checkpoint_manifest.py [--dim 1024 --layers 8 --folder /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.train import checkpointing
from llamafoundry.train.optim import OptimConfig, build_optimizer


def trained(args: argparse.Namespace) -> tuple[Transformer, torch.optim.Optimizer]:
    """The model after one AdamW step, so that the optimizer holds its two moments."""
    cfg = ModelConfig(dim=args.dim, n_layers=args.layers, n_heads=args.dim // 64, vocab_size=32000)
    model = Transformer(cfg)
    optimizer = build_optimizer(model, OptimConfig())
    model(torch.randint(0, cfg.vocab_size, (1, 16))).float().mean().backward()
    optimizer.step()
    return model, optimizer


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sha256_all(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    model, optimizer = trained(args)
    with tempfile.TemporaryDirectory(dir=args.folder) as root:
        save = seconds(lambda: checkpointing.save_checkpoint(Path(root), 1, model, optimizer, {}, keep=1))
        folder = Path(root) / "step_00000001"
        metadata = FileSystemReader(str(folder)).read_metadata()  # ours, just written
        manifest = min(seconds(lambda: checkpointing._write_manifest(folder, metadata)) for _ in range(3))
        verify = min(seconds(lambda: checkpointing.verify_manifest(folder)) for _ in range(3))
        full = min(seconds(lambda: sha256_all(folder)) for _ in range(3))
        size = sum(p.stat().st_size for p in folder.iterdir())
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{params / 1e6:.0f}M parameters, checkpoint {size / 1e9:.2f} GB, save {save:.2f} s (manifest included)"
    )
    print(
        f"  ours: manifest {manifest * 1e3:.1f} ms to write ({manifest / save:.2%} of the save), "
        f"{verify * 1e3:.1f} ms to check"
    )
    print(
        f"  sha256 of every byte: {full:.2f} s ({full / save:.0%} of the save, {size / full / 1e9:.2f} GB/s)"
    )
    print(f"  ratio: hashing everything costs {full / manifest:,.0f}x our manifest")


if __name__ == "__main__":
    main()
