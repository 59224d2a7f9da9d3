"""The command line's one grammar, defined once: the model comes first and is positional, every output
is `-o/--output` (with `--overwrite` to replace an output of ours, never anything else), and every command
that loads a model takes the same `--device`, `--dtype`, `--tokenizer`, `--quantize` (and `--group-size`)
options with the same defaults.

Spellings of earlier releases still work for one release and print a deprecation line.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from llamafoundry.errors import UserError

MODEL_HELP = (
    "model folder (ours, quantized, Meta, Hugging Face, a training checkpoint), llama2.c .bin, Hugging Face "
    "hub id (org/name: the cache first), or preset name"
)
DEVICE_HELP = "cpu, cuda, cuda:1, mps ... (default: cuda if available, else cpu)"
# Commands that only read and write weights (info, convert) run nothing on the device: by default the
# model stays where the loader puts it, in CPU memory, so converting a large model needs no GPU memory.
FILES_ONLY_DEVICE_HELP = "cpu, cuda, ... (default: cpu; this command runs no model)"


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling works in this release only."""
    print(
        f"llamafoundry: warning: {old} is deprecated; use {new} (the old spelling goes in the next release)",
        file=sys.stderr,
    )


class _DeprecatedFlag(argparse.Action):
    """Stores like the option it replaces, after a deprecation line."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_deprecated(option_string, self.new)
        setattr(namespace, self.dest, values)


def add_model(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    p.add_argument("model", help=help)


def add_output(
    p: argparse.ArgumentParser,
    help: str,
    *,
    required: bool = False,
    default: Path | None = None,
    old_flags: tuple[str, ...] = (),
    old_positional: bool = False,
    overwrite: bool = True,
) -> None:
    """`-o/--output`, and `--overwrite` unless the output is a run folder that the command resumes in
    (`overwrite=False`); `old_flags` (e.g. --out) and an `old_positional` output keep working, deprecated.

    With `old_positional`, call `output_of(args)` to read the output: argparse cannot require an option
    that an old positional may stand in for.
    """
    p.add_argument(
        "-o", "--output", type=Path, default=default, required=required and not old_positional, help=help
    )
    for flag in old_flags:
        p.add_argument(
            flag, dest="output", type=Path, action=_DeprecatedFlag, new="-o/--output", help=argparse.SUPPRESS
        )
    if old_positional:
        p.add_argument("old_output", nargs="?", type=Path, default=None, help=argparse.SUPPRESS)
    if overwrite:
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace an output llamafoundry wrote earlier (never what it did not write)",
        )


def output_of(args: argparse.Namespace) -> Path:
    """The output path of a command whose output was once positional."""
    old = getattr(args, "old_output", None)
    if old is not None:
        if args.output is not None:
            raise UserError(f"two outputs given ({old} and -o {args.output}); give only -o/--output")
        warn_deprecated(f"the positional output ({old})", "-o/--output")
        return old
    if args.output is None:
        raise UserError("no output given; pass -o/--output PATH")
    return args.output


def add_load_options(
    p: argparse.ArgumentParser,
    *,
    dtype_help: str = "float32, bfloat16 or float16 (default: as stored)",
    device_help: str = DEVICE_HELP,
    quantize: bool = True,
) -> None:
    """The options of every command that loads a model."""
    p.add_argument("--device", default=None, help=device_help)
    p.add_argument("--dtype", default=None, help=dtype_help)
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer.model or tokenizer.json (or a folder of one), if the model lacks one",
    )
    if quantize:
        p.add_argument(
            "--quantize", choices=("int8", "int4"), default=None, help="quantize the weights on load"
        )
        p.add_argument("--group-size", type=int, default=128, help="int4 group size: 32, 64, 128 or 256")


def resolve_device(name: str | None) -> str:
    """The device every command defaults to: CUDA where there is one, else the CPU; a named device
    that torch does not know, or that this machine lacks, is a UserError before any model loads."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asks for CUDA, but no GPU is visible; use --device cpu")
    if device.type == "meta":  # a device of shapes only: nothing runs there
        raise UserError("--device meta holds no weights; use cpu, cuda, cuda:N or mps")
    try:
        torch.empty(0, device=device)  # an index past the last GPU, a backend this build lacks
    except (RuntimeError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--device {name} is not usable here ({reason}); use --device cpu") from None
    return name


def check_at_least(args: argparse.Namespace, minimum: int, *names: str) -> None:
    """A UserError naming the first of the flags `names` that is given and below `minimum`."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def check_positive(args: argparse.Namespace, *names: str, zero: bool = False) -> None:
    """A UserError naming the first of the float flags `names` that is given and not a finite number
    above 0 (or 0 itself, with `zero`): nan and inf parse as floats, but measure nothing."""
    for name in names:
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value is None:
            continue
        if math.isinf(value):
            raise UserError(f"{flag} must be finite, got {value}")
        if not (value > 0 or (zero and value == 0)):  # false for nan too
            raise UserError(f"{flag} must be {'0 or more' if zero else 'positive'}, got {value}")


def quant_config(args: argparse.Namespace):
    """The QuantConfig that `--quantize` and `--group-size` ask for, or None."""
    if getattr(args, "quantize", None) is None:
        return None
    from llamafoundry.inference.quantize import QuantConfig

    return QuantConfig(args.quantize, args.group_size)


def load(args: argparse.Namespace, **overrides):
    """(model, tokenizer, config) of `args.model` with the shared load options; `overrides` replace or
    add `load_model` arguments."""
    from llamafoundry.checkpoint import load_model

    options = {
        "tokenizer": args.tokenizer,
        "quantize": quant_config(args),
        "device": resolve_device(args.device),
        "dtype": args.dtype,
    }
    return load_model(args.model, **(options | overrides))
