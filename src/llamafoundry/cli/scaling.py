"""`llamafoundry scaling fit | plan`: the loss law L(N, D) from your runs, and the model an inference budget
calls for (the paper's thesis; train/scaling.py)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from llamafoundry.cli.options import add_output
from llamafoundry.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("scaling", help="fit L(N, D) to runs; plan a model for an inference budget")
    commands = p.add_subparsers(dest="scaling_command", metavar="COMMAND", required=True)

    fit = commands.add_parser("fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta to training runs")
    fit.add_argument("runs", nargs="+", type=Path, help="training run folders (their validation losses)")
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
    law.add_argument("--chinchilla", action="store_true", help="Hoffmann et al.'s published coefficients")
    plan.add_argument("--json", action="store_true", help="print the choice as one JSON object")
    plan.set_defaults(func=cmd_plan)


def cmd_fit(args: argparse.Namespace) -> None:
    from llamafoundry import fileio
    from llamafoundry.train.scaling import fit_law, plot_fit, run_points

    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
    points = [p for run in args.runs for p in run_points(run) if p[1] >= args.min_tokens]
    fit = fit_law(points, bootstrap=args.bootstrap)
    out = args.output
    with fileio.atomic_dir(out, kind="scaling fit", overwrite=args.overwrite) as folder:
        fileio.write_json(folder / "fit.json", fit.to_dict())
        plot_fit(points, fit.law, folder)
    law = fit.law
    print(
        f"L(N, D) = {law.E:.4g} + {law.A:.4g}/N^{law.alpha:.3f} + {law.B:.4g}/D^{law.beta:.3f} "
        f"from {fit.points} points of {len(args.runs)} runs"
    )
    for name, (low, high) in fit.intervals.items():
        print(f"  {name:<5} 95% bootstrap interval [{low:.4g}, {high:.4g}]")
    print(f"wrote {out}/fit.json, loss_vs_tokens.png and iso_loss.png")


def cmd_plan(args: argparse.Namespace) -> None:
    from llamafoundry.train.scaling import CHINCHILLA, compute_optimal, plan

    law = CHINCHILLA if args.chinchilla else _read_fit(args.fit)
    choice = plan(law, args.target_loss, args.inference_tokens)
    if args.json:
        print(json.dumps(choice.to_dict()))
        return
    flops = 6 * choice.params * choice.tokens
    n_opt, d_opt = compute_optimal(law, flops)
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
        f"  the compute-optimal model for that training compute: {n_opt:.3g} parameters, {d_opt:.3g} tokens "
        f"(loss {law.loss(n_opt, d_opt):.4g})"
    )


def _read_fit(path: Path):
    from llamafoundry.train.scaling import LossLaw

    if path.is_dir():
        path = path / "fit.json"
    try:
        coefficients = json.loads(path.read_text(encoding="utf-8"))["law"]
        law = LossLaw(**{k: float(coefficients[k]) for k in ("E", "A", "B", "alpha", "beta")})
    except FileNotFoundError:
        raise UserError(f"fit {path} not found; make one with `llamafoundry scaling fit RUN...`") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a fit from `llamafoundry scaling fit`") from None
    if not all(math.isfinite(v) and v > 0 for v in law.to_dict().values()):
        raise UserError(f"{path} holds coefficients that are not positive finite numbers")
    return law
