"""`llamafoundry scaling run | fit | plan`: a sweep of model sizes x token budgets, the loss law L(N, D)
fitted to its runs, and the model an inference budget calls for (the paper's thesis; train/sweep.py,
train/scaling.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llamafoundry.cli.options import DEVICE_HELP, add_output
from llamafoundry.errors import UserError

# The inference volumes the plan's table walks through, as multiples of --inference-tokens.
_T_STEPS = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "scaling",
        help="sweep model sizes x tokens; fit L(N, D) to runs; plan a model for an inference budget",
    )
    commands = p.add_subparsers(dest="scaling_command", metavar="COMMAND", required=True)
    _register_run(commands)
    _register_thesis(commands)

    fit = commands.add_parser("fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta to training runs")
    fit.add_argument(
        "runs", nargs="+", type=Path, help="training run or sweep folders (their validation losses)"
    )
    fit.add_argument("--bootstrap", type=int, default=100, help="resamples for the intervals (default 100)")
    fit.add_argument("--min-tokens", type=float, default=0.0, help="drop points before this many tokens")
    add_output(
        fit,
        "folder for fit.json and the plots loss_vs_tokens.png, iso_loss.png (default scaling_fit)",
        default=Path("scaling_fit"),
    )
    fit.set_defaults(func=cmd_fit)

    plan = commands.add_parser(
        "plan", help="the (parameters, tokens) of least training + inference compute for a target loss"
    )
    plan.add_argument("--target-loss", type=float, required=True, help="validation loss to reach")
    plan.add_argument(
        "--inference-tokens", type=float, default=0.0, help="tokens the model will serve (0: compute-optimal)"
    )
    law = plan.add_mutually_exclusive_group(required=True)
    law.add_argument("--fit", type=Path, help="a fit from `scaling fit` (its folder or fit.json)")
    law.add_argument(
        "--chinchilla",
        nargs="?",
        const="replication",
        choices=("replication", "published"),
        help="Hoffmann et al.'s law: as Besiroglu et al. (2024) refitted it to their data (the default; ~20 "
        "tokens per parameter compute-optimal) or as published (E 1.69, A 406.4, B 410.7, alpha 0.34, "
        "beta 0.28; 50-120 tokens per parameter)",
    )
    plan.add_argument("--gpu", default="a100-80gb", help="GPU kind for the cost (default a100-80gb)")
    plan.add_argument("--mfu", type=float, default=0.5, help="assumed model FLOPs utilisation (default 0.5)")
    plan.add_argument("--json", action="store_true", help="print the choice as one JSON object")
    plan.set_defaults(func=cmd_plan)


def _register_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="train a grid of model sizes x token budgets, each a resumable run",
        description="Train every (size, budget) of a grid on one token folder, each a normal run folder in "
        "the sweep folder; finished runs are skipped and interrupted ones resume, so rerunning the command "
        "completes the grid. The base recipe (--config and --section.key overrides, e.g. --data.tokens) "
        "sets everything else; learning rate and warmup follow the rule in train/sweep.py.",
    )
    run.add_argument("--config", type=Path, default=None, help="base TOML recipe (default: the defaults)")
    run.add_argument(
        "--sizes", required=True, help="model sizes DIMxLAYERS[xHEADS], comma-separated (e.g. 64x2,128x4)"
    )
    run.add_argument(
        "--budgets", required=True, help="training tokens per run, comma-separated (e.g. 1e6,4e6)"
    )
    run.add_argument(
        "--points", type=int, default=10, help="validations along each run, each an (N, D) point (default 10)"
    )
    run.add_argument(
        "--lr-rule",
        default="kaplan",
        choices=("kaplan", "recipe"),
        help="peak learning rate per size: Kaplan et al.'s lr(N) (default) or the recipe's for all",
    )
    run.add_argument(
        "--lr-scale", type=float, default=1.0, help="multiply the rule's learning rate (default 1)"
    )
    add_output(run, "sweep folder (default runs/sweep)", default=Path("runs/sweep"), overwrite=False)
    run.add_argument("--device", default=None, help=DEVICE_HELP)
    run.set_defaults(func=cmd_run, accepts_overrides=True, keeps_freed_memory=True)


def _register_thesis(commands: argparse._SubParsersAction) -> None:
    from llamafoundry.thesis import ThesisOptions

    defaults = ThesisOptions()
    p = commands.add_parser(
        "thesis",
        help="reproduce the paper's thesis on this machine (about an hour on 2 CPU cores): sweep, fit, plan",
        description="Build the quickstart corpus with a small vocabulary, sweep tiny LLaMAs over token "
        "budgets, fit L(N, D), and write a page testing the paper's two claims with the numbers behind "
        "each (docs/thesis.md is this command's output). Finished stages and runs are reused.",
    )
    add_output(p, f"work folder (default {defaults.out})", default=defaults.out, overwrite=False)
    p.add_argument("--doc", type=Path, default=None, help="the write-up (default OUTPUT/thesis.md)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a write-up and figures this command wrote before"
    )
    p.add_argument("--sizes", default=",".join(defaults.sizes), help="model sizes DIMxLAYERS[xHEADS]")
    p.add_argument(
        "--budgets", default=",".join(f"{b:g}" for b in defaults.budgets), help="training tokens per run"
    )
    p.add_argument("--points", type=int, default=defaults.points, help="validations along each run")
    p.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="tokenizer vocabulary")
    p.add_argument("--config", type=Path, default=defaults.config, help="the sweep's base recipe")
    p.set_defaults(func=cmd_thesis, accepts_overrides=True, keeps_freed_memory=True)


def cmd_thesis(args: argparse.Namespace) -> None:
    from llamafoundry.thesis import ThesisOptions, run_thesis

    opts = ThesisOptions(
        out=args.output,
        doc=args.doc or args.output / "thesis.md",
        vocab_size=args.vocab_size,
        sizes=tuple(s for s in args.sizes.split(",") if s.strip()),
        budgets=tuple(_number(b, "--budgets") for b in args.budgets.split(",") if b.strip()),
        points=args.points,
        config=args.config,
        overwrite=args.overwrite,
        overrides=tuple(args.overrides),
    )
    print(f"done: see {run_thesis(opts)}")


def cmd_run(args: argparse.Namespace) -> None:
    from llamafoundry.data.shards import read_manifest
    from llamafoundry.train.recipe import load_run_recipe
    from llamafoundry.train.sweep import Size, grid, run_sweep

    base = load_run_recipe(args.config, args.overrides)
    if not base.data.tokens:
        raise UserError("no token folder: pass --data.tokens DIR (built by `llamafoundry data tokenize`)")
    read_manifest(base.data.tokens)  # a missing or unfinished folder is found now, before any run
    sizes = [Size.parse(text) for text in args.sizes.split(",") if text.strip()]
    budgets = [_number(text, "--budgets") for text in args.budgets.split(",") if text.strip()]
    runs = grid(base, sizes, budgets, args.output, args.points, args.lr_rule, args.lr_scale)
    summary = run_sweep(runs, args.output, device=args.device)
    print(f"sweep {args.output}: {len(summary)} runs; fit them with `llamafoundry scaling fit {args.output}`")


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a number") from None


def cmd_fit(args: argparse.Namespace) -> None:
    from llamafoundry import fileio
    from llamafoundry.train.scaling import fit_law, plot_fit, run_points
    from llamafoundry.train.sweep import run_folders

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    runs = run_folders(args.runs)
    points = [p for run in runs for p in run_points(run) if p[1] >= args.min_tokens]
    fit = fit_law(points, bootstrap=args.bootstrap)
    out = args.output
    with fileio.atomic_dir(out, kind="scaling fit", overwrite=args.overwrite) as folder:
        fileio.write_json(folder / "fit.json", fit.to_dict())
        plot_fit(points, fit.law, folder)
    law = fit.law
    print(
        f"L(N, D) = {law.E:.4g} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f} "
        f"from {fit.points} points of {len(runs)} runs"
    )
    for name, (low, high) in fit.intervals.items():
        print(f"  {name:<5} 95% bootstrap interval [{low:.4g}, {high:.4g}]")
    print(f"wrote {out}/fit.json, loss_vs_tokens.png and iso_loss.png")


def cmd_plan(args: argparse.Namespace) -> None:
    from llamafoundry.train.plan import GPUS
    from llamafoundry.train.scaling import CHINCHILLA_LAWS, compute_optimal, plan

    if args.gpu not in GPUS:
        raise UserError(f"unknown GPU {args.gpu!r}; known: {', '.join(GPUS)}")
    if not 0 < args.mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {args.mfu}")
    law = CHINCHILLA_LAWS[args.chinchilla] if args.chinchilla else _read_fit(args.fit)
    choice = plan(law, args.target_loss, args.inference_tokens)
    cost = _cost(choice.train_flops, args.gpu, args.mfu)
    if args.json:
        print(json.dumps(choice.to_dict() | {f"train_{k}": v for k, v in cost.items()}))
        return
    n_opt, d_opt = compute_optimal(law, choice.train_flops)
    source = f"Chinchilla ({args.chinchilla})" if args.chinchilla else str(args.fit)
    print(f"L(N, D) = {law.E:.4g} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f} ({source})")
    print(
        f"to reach loss {args.target_loss} and serve {args.inference_tokens:.3g} tokens: "
        f"{choice.params:.3g} parameters trained on {choice.tokens:.3g} tokens "
        f"({choice.tokens / choice.params:.0f} tokens per parameter)"
    )
    print(
        f"  compute: {choice.train_flops:.3g} FLOPs training + {choice.inference_flops:.3g} inference = "
        f"{choice.train_flops + choice.inference_flops:.3g}"
    )
    print(
        f"  training on {args.gpu} at MFU {args.mfu:.0%}: {cost['gpu_hours']:,.4g} GPU-hours, "
        f"{cost['mwh']:,.4g} MWh, {cost['tco2eq']:,.4g} tCO2eq (Sec. 6 formula: PUE 1.1, 0.385 tCO2eq/MWh)"
    )
    print(
        f"  the compute-optimal model for that training compute: {n_opt:.3g} parameters, {d_opt:.3g} tokens "
        f"(loss {law.loss(n_opt, d_opt):.4g})"
    )
    print(_table(law, args))


def _cost(flops: float, gpu: str, mfu: float) -> dict[str, float]:
    """GPU-hours, MWh and tCO2eq of `flops` on `gpu` at `mfu` of its bf16 peak (the paper's Sec. 6)."""
    from llamafoundry.footprint import footprint
    from llamafoundry.train.plan import GPUS

    spec = GPUS[gpu]
    hours = flops / (mfu * spec.peak_bf16_flops) / 3600
    f = footprint(hours, spec.power_w)
    return {"gpu_hours": hours, "mwh": f.energy_mwh, "tco2eq": f.tco2eq}


def _table(law, args: argparse.Namespace) -> str:
    """The choice as the inference volume grows: from compute-optimal toward smaller models trained longer."""
    from llamafoundry.train.scaling import plan

    scale = args.inference_tokens or 1e12
    lines = [
        "",
        "| inference tokens | parameters | training tokens | tokens/param | training GPU-hours | total FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for t in sorted({step * scale for step in _T_STEPS}):
        c = plan(law, args.target_loss, t)
        hours = _cost(c.train_flops, args.gpu, args.mfu)["gpu_hours"]
        lines.append(
            f"| {t:.3g} | {c.params:.3g} | {c.tokens:.3g} | {c.tokens / c.params:,.0f} | {hours:,.4g} | "
            f"{c.train_flops + c.inference_flops:.3g} |"
        )
    return "\n".join(lines)


def _read_fit(path: Path):
    from llamafoundry.train.scaling import read_law

    return read_law(path)
