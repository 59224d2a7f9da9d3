"""`llamafoundry train`: pretrain with a TOML recipe and `--section.key value` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="pretrain a model with the paper's recipe (torchrun for several processes)",
        description="Pretrain with a TOML recipe. Any field can be overridden: --train.lr 3e-4 --output.dir runs/x",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML recipe (configs/*.toml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.set_defaults(func=cmd_train, accepts_overrides=True)


def cmd_train(args: argparse.Namespace) -> None:
    from llamafoundry.train.recipe import load_recipe
    from llamafoundry.train.trainer import train

    cfg = load_recipe(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    print(
        f"done: {result.steps} steps, {result.tokens:,} tokens, validation loss {result.val_loss:.4f}; "
        f"report in {result.output / 'report.md'}"
    )
