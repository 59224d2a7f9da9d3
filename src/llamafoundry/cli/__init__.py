"""`llamafoundry <command>`: the command line parses arguments and calls the library, nothing more.

Each command group lives in its own module with a `register(subparsers)` function.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llamafoundry import __version__
from llamafoundry.allocator import keep_freed_memory
from llamafoundry.errors import UserError

# Modules of llamafoundry.cli, each registering its commands, in the order `--help` lists them.
COMMAND_MODULES = ["models", "tokenizer", "data", "train", "finetune", "plan", "scaling", "eval", "inference"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="llamafoundry",
        description="The LLaMA paper end to end: data, training, inference, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"llamafoundry {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"llamafoundry.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if getattr(args, "keeps_freed_memory", False):
        keep_freed_memory()  # the command's model steps reuse their large buffers (see allocator.py)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"llamafoundry {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # an Interrupted run says where it stopped
        if not getattr(exc, "quiet", False):
            print(f"llamafoundry {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:  # e.g. `llamafoundry info ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)
