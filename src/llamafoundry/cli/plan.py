"""`llamafoundry plan` (a training run on paper) and `llamafoundry footprint` (energy and CO2 of GPU-hours)."""

from __future__ import annotations

import argparse
import math

from llamafoundry.cli.options import check_at_least, check_positive, warn_deprecated


def register(subparsers: argparse._SubParsersAction) -> None:
    from llamafoundry.train.plan import GPUS

    p = subparsers.add_parser(
        "plan", help="memory per GPU, tokens/s/GPU, days, energy and CO2 of a training run"
    )
    p.add_argument("model", nargs="?", default=None, help="model preset, e.g. llama-65b")
    p.add_argument("--preset", dest="old_preset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    p.add_argument("--gpu", default="a100-80gb", choices=sorted(GPUS), help="GPU kind (default a100-80gb)")
    p.add_argument(
        "--tokens", type=float, default=None, help="training tokens (default: the paper's for the preset)"
    )
    p.add_argument(
        "--tp", type=int, default=None, help="tensor-parallel degree (default: the smallest that fits)"
    )
    p.add_argument("--checkpointing", default="selective", choices=["none", "selective", "full"])
    p.add_argument("--mfu", type=float, default=0.5, help="assumed model FLOPs utilisation (default 0.5)")
    p.add_argument(
        "--seq-len", type=int, default=None, help="sequence length (default: the preset's context)"
    )
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per forward")
    p.set_defaults(func=cmd_plan)

    p = subparsers.add_parser(
        "footprint", help="energy (MWh) and tCO2eq of GPU-hours, the paper's Sec. 6 formula"
    )
    p.add_argument("gpu_hours", type=float, nargs="?", help="GPU-hours (omit with --paper)")
    p.add_argument("--power", type=float, default=400.0, help="watts per GPU (paper: 400 for A100-80GB)")
    p.add_argument("--pue", type=float, default=1.1, help="power usage effectiveness (paper: 1.1)")
    p.add_argument(
        "--carbon-intensity",
        type=float,
        default=0.385,
        help="tCO2eq per MWh (paper: 0.385, the US average; e.g. ~0.06 for France, ~0.5 for China)",
    )
    p.add_argument("--paper", action="store_true", help="print Table 15 from the paper's GPU-hours")
    p.set_defaults(func=cmd_footprint)


def cmd_plan(args: argparse.Namespace) -> None:
    from llamafoundry.config import format_params, get_preset, num_params
    from llamafoundry.errors import UserError
    from llamafoundry.train import plan as planning

    _preset_argument(args)
    check_positive(args, "tokens")
    check_at_least(args, 1, "tp", "seq_len", "micro_batch")
    cfg = get_preset(args.preset)
    tokens = args.tokens or planning.PAPER_TOKENS.get(args.preset)
    if tokens is None:
        raise UserError(f"--tokens is needed: the paper gives no token budget for {args.preset}")
    if args.gpus < 1:
        raise UserError("--gpus must be at least 1")
    p = planning.make_plan(
        cfg,
        args.gpus,
        args.gpu,
        tokens=tokens,
        tp=args.tp,
        checkpointing=args.checkpointing,
        mfu=args.mfu,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
    )
    gpu = planning.GPUS[args.gpu]
    print(
        f"{args.preset}: {format_params(num_params(cfg))} parameters, {tokens / 1e12:.2f}T tokens on {args.gpus} x "
        f"{args.gpu}; dp_shard {p.dp} x tp {p.tp}, {p.checkpointing} activation checkpointing"
    )
    print(f"\nmemory per GPU (estimate, of {gpu.memory_gb:.0f} GB):")
    for kind, gb in p.memory_gb.items():
        print(f"  {kind:<42} {gb:8.1f} GB")
    print(
        f"  {'total':<42} {p.total_memory_gb:8.1f} GB"
        + ("" if p.total_memory_gb <= gpu.memory_gb else "  (does not fit: raise --tp or checkpoint more)")
    )
    hours = p.footprint.device_hours
    rows = [
        ("tokens/s/GPU", f"{p.tokens_per_s_per_gpu:,.0f}"),
        ("days", f"{p.days:.1f}"),
        ("GPU-hours", f"{hours:,.0f}"),
        ("energy (MWh)", f"{p.footprint.energy_mwh:,.0f}"),
        ("tCO2eq", f"{p.footprint.tco2eq:,.0f}"),
    ]
    paper = _paper_column(args, planning)
    print(f"\n{'':<14} {'plan (MFU ' + format(args.mfu, '.0%') + ')':>18} {'paper' if paper else '':>10}")
    for (name, value), reported in zip(rows, paper or [""] * len(rows), strict=True):
        print(f"{name:<14} {value:>18} {reported:>10}")


def _preset_argument(args: argparse.Namespace) -> None:
    """`plan MODEL`; the older `plan --preset MODEL` still works, deprecated."""
    from llamafoundry.errors import UserError

    if args.old_preset is not None:
        if args.model is not None:
            raise UserError("the preset is given twice; give it once, as `plan PRESET`")
        warn_deprecated("--preset", "the positional preset (`llamafoundry plan llama-65b ...`)")
        args.model = args.old_preset
    if args.model is None:
        raise UserError("no model given; name a preset, e.g. `llamafoundry plan llama-65b --gpus 2048`")
    args.preset = args.model


def _paper_column(args: argparse.Namespace, planning) -> list[str] | None:
    """The paper's numbers for its own setting (2,048 A100-80GB, its token budget), else None."""
    if args.preset not in planning.PAPER_GPU_HOURS or args.gpu != "a100-80gb" or args.tokens:
        return None
    is_65b = args.preset == "llama-65b" and args.gpus == 2048
    return [
        f"{planning.PAPER_65B['tokens_per_s_per_gpu']}" if is_65b else "-",
        f"~{planning.PAPER_65B['days']}" if is_65b else "-",
        f"{planning.PAPER_GPU_HOURS[args.preset]:,}",
        f"{planning.PAPER_MWH[args.preset]}",
        f"{planning.PAPER_TCO2[args.preset]}",
    ]


def cmd_footprint(args: argparse.Namespace) -> None:
    from llamafoundry.errors import UserError
    from llamafoundry.footprint import footprint

    if args.paper:
        if args.gpu_hours is not None:
            raise UserError("--paper prints the paper's Table 15; drop the GPU-hours, or drop --paper")
        print(_table_15())
        return
    if args.gpu_hours is None:
        raise UserError("give GPU-hours, e.g. `llamafoundry footprint 82432`, or --paper for Table 15")
    if not (math.isfinite(args.gpu_hours) and args.gpu_hours >= 0):
        raise UserError(f"GPU-hours must be a finite number, 0 or more, got {args.gpu_hours}")
    check_positive(args, "power")
    if not (math.isfinite(args.pue) and args.pue >= 1):
        raise UserError(f"--pue must be 1 or more (the facility's power over the IT power), got {args.pue}")
    if not (math.isfinite(args.carbon_intensity) and args.carbon_intensity >= 0):
        raise UserError(f"--carbon-intensity must be 0 or more tCO2eq per MWh, got {args.carbon_intensity}")
    f = footprint(args.gpu_hours, args.power, args.pue, args.carbon_intensity)
    print(
        f"{args.gpu_hours:,.0f} GPU-hours at {args.power:.0f} W, PUE {args.pue:g}: {f.energy_mwh:,.2f} MWh, "
        f"{f.tco2eq:,.2f} tCO2eq ({args.carbon_intensity:g} t/MWh)"
    )


def _table_15() -> str:
    """Table 15 from the paper's GPU-hours and the Sec. 6 formula, to the paper's precision, beside its print."""
    from llamafoundry.footprint import PAPER_GPU, table_15

    gpu, power = PAPER_GPU
    lines = [
        "Table 15 (Touvron et al., 2023): Wh = GPU-hours x GPU power x PUE 1.1; tCO2eq = MWh x 0.385",
        "",
        "| model | GPU | GPU power | GPU-hours | MWh | tCO2eq | paper: MWh, tCO2eq |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, hours, f, (mwh, tco2) in table_15():
        # The paper truncates MWh (65B: 449.84 -> 449) and rounds tCO2eq (7B: 13.96 -> 14): so do we.
        lines.append(
            f"| {model} | {gpu} | {power:.0f} W | {hours:,} | {int(f.energy_mwh)} | {round(f.tco2eq)} | {mwh}, {tco2} |"
        )
    return "\n".join(lines)
