"""`llamafoundry finetune MODEL --data FILE...`: instruction finetuning (Sec. 4, LLaMA-I) with a TOML recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.cli.options import DEVICE_HELP, MODEL_HELP, add_output


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="instruction-finetune a model (the paper's LLaMA-I): Alpaca, chat or prompt/completion files",
        description="Finetune MODEL on instruction files with a chat template, the loss on the replies only. "
        "The recipe (default: configs/finetune.toml's) takes --section.key value overrides: --train.lr 1e-4.",
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--data",
        nargs="+",
        type=Path,
        default=None,
        help="instruction files: Alpaca JSON/JSONL (instruction, input, output), chat JSONL (messages) "
        "or prompt/completion JSONL, gzipped or not (the recipe's data.files)",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML finetuning recipe (configs/finetune.toml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument(
        "--tasks", default=None, help="benchmarks scored before and after, as `eval --tasks` (eval.tasks)"
    )
    p.add_argument("--limit", type=int, default=None, help="first N examples per benchmark (eval.limit)")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="benchmark files, shared/data layout (eval.data_dir)"
    )
    p.add_argument(
        "--lora", type=int, default=None, metavar="RANK", help="train LoRA adapters of this rank (lora.rank)"
    )
    p.add_argument(
        "--merge", action="store_true", help="with LoRA, also write model/ with the adapters merged in"
    )
    add_output(p, "run folder (the recipe's output.dir)", overwrite=False)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=cmd_finetune, accepts_overrides=True, keeps_freed_memory=True)


def cmd_finetune(args: argparse.Namespace) -> None:
    from llamafoundry.finetune.recipe import load_finetune_recipe
    from llamafoundry.finetune.trainer import before_after, finetune
    from llamafoundry.train.metrics import read_metrics

    shortcuts = {
        "data.files": ",".join(map(str, args.data)) if args.data else None,
        "output.dir": args.output,
        "eval.tasks": args.tasks,
        "eval.limit": args.limit,
        "eval.data_dir": args.data_dir,
        "lora.rank": args.lora,
        "lora.merge": "true" if args.merge else None,
    }
    overrides = [*args.overrides]
    for key, value in shortcuts.items():
        if value is not None:
            overrides += [f"--{key}", str(value)]
    recipe = load_finetune_recipe(args.config, overrides)
    result = finetune(args.model, recipe, resume=args.resume, device=args.device)
    if not result.is_main:  # under torchrun every rank returns here: rank 0 reports for the job
        return
    before, after = before_after(read_metrics(result.output / "metrics.jsonl"))
    folders = [f for f in ("adapters", "model") if (result.output / f).is_dir()]
    print(
        f"done: {result.steps} steps; held-out loss on the replies {before.get('loss', float('nan')):.4f} "
        f"-> {after.get('loss', float('nan')):.4f}; {' and '.join(folders)} in {result.output}, "
        f"report in {result.output / 'report.md'}"
    )
