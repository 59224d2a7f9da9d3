"""`llamafoundry train`: pretrain with a TOML recipe and `--section.key value` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.cli.options import DEVICE_HELP, add_output


def register(subparsers: argparse._SubParsersAction) -> None:
    from llamafoundry.quickstart import QuickstartOptions

    p = subparsers.add_parser(
        "train",
        help="pretrain a model with the paper's recipe (torchrun for several processes)",
        description="Pretrain with a TOML recipe. Any field can be overridden: --train.lr 3e-4 --output.dir runs/x",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML recipe (configs/*.toml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        default=None,
        help="continued pretraining: start from this model folder's weights, in its shape, with its "
        "tokenizer (any format `info` reads; the recipe's model.init_from)",
    )
    add_output(p, "run folder (the recipe's output.dir)", overwrite=False)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=cmd_train, accepts_overrides=True, keeps_freed_memory=True)

    p = subparsers.add_parser(
        "compare", help="training runs side by side: loss (and validation metrics) against tokens, a table"
    )
    p.add_argument(
        "runs", nargs="+", type=Path, help="training run folders (or sweep folders: all their runs)"
    )
    add_output(p, "folder for compare.png and compare.md (default compare)", default=Path("compare"))
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "quickstart",
        help="the main job: corpus, tokenizer, ~10 min of CPU training, samples, evaluation, report",
        description="Build a corpus from the Python installation, train a tokenizer and a small LLaMA on it, "
        "sample, evaluate and write a report. Reuses what earlier runs built. Extra --section.key value "
        "arguments override the training recipe.",
    )
    add_output(
        p,
        "output folder (default runs/quickstart)",
        default=Path("runs/quickstart"),
        old_flags=("--out",),
        overwrite=False,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget (default 10)")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=QuickstartOptions.vocab_size,
        help=f"tokenizer vocabulary (default {QuickstartOptions.vocab_size}, the shipped fit's; another "
        "needs --model)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="PRESET",
        help="train this preset instead of the size the quickstart chooses for its budget (e.g. llama-15m)",
    )
    p.add_argument(
        "--sizes",
        default=",".join(QuickstartOptions.sizes),
        help="candidate sizes DIMxLAYERS[xHEADS] to choose from, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="training recipe (default configs/tiny-cpu.toml)"
    )
    p.add_argument(
        "--data-recipe", type=Path, default=None, help="corpus recipe (configs/data/quickstart.toml)"
    )
    p.set_defaults(func=cmd_quickstart, accepts_overrides=True, keeps_freed_memory=True)


def cmd_train(args: argparse.Namespace) -> None:
    from llamafoundry.train.recipe import load_run_recipe
    from llamafoundry.train.trainer import train

    overrides = [
        *args.overrides,
        *(["--model.init_from", args.init_from] if args.init_from is not None else []),
        *(["--output.dir", str(args.output)] if args.output else []),
    ]
    cfg = load_run_recipe(args.config, overrides)
    result = train(cfg, resume=args.resume, device=args.device)
    if result.is_main:  # under torchrun every rank returns here: one line for the job
        print(
            f"done: {result.steps} steps, {result.tokens:,} tokens, validation loss {result.val_loss:.4f}; "
            f"report in {result.output / 'report.md'}"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    from llamafoundry import fileio
    from llamafoundry.train.compare import plot, read_runs, table
    from llamafoundry.train.sweep import run_folders

    runs = read_runs(run_folders(args.runs))
    text = table(runs)
    with fileio.atomic_dir(args.output, kind="run comparison", overwrite=args.overwrite) as folder:
        plot(runs, folder / "compare.png")
        fileio.write_text(folder / "compare.md", f"![runs side by side](compare.png)\n\n{text}")
    print(text, end="")
    print(f"wrote {args.output / 'compare.png'} and {args.output / 'compare.md'}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from llamafoundry.quickstart import QuickstartOptions, run_quickstart

    defaults = QuickstartOptions()
    opts = QuickstartOptions(
        out=args.output,
        minutes=args.minutes,
        vocab_size=args.vocab_size,
        data_recipe=args.data_recipe or defaults.data_recipe,
        train_config=args.config or defaults.train_config,
        overrides=tuple(args.overrides),
        model=args.model,
        sizes=tuple(s for s in args.sizes.split(",") if s.strip()),
    )
    report = run_quickstart(opts)
    print(f"done: see {report}")
