"""Tokenizer commands: `tokenizer train`, `tokenizer encode`."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.cli.options import add_output


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("tokenizer", help="train or try a SentencePiece tokenizer")
    commands = group.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser("train", help="train a BPE tokenizer with the paper's settings")
    p.add_argument("files", nargs="+", type=Path, help="text files, one training sentence per line")
    add_output(p, "where to write tokenizer.model", required=True)
    p.add_argument("--vocab-size", type=int, default=32000, help="vocabulary size (paper: 32000)")
    p.add_argument(
        "--input-sentence-size", type=int, default=2_000_000, help="sentences sampled for training"
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("encode", help="show the tokens of a text")
    p.add_argument("tokenizer", type=Path, help="tokenizer.model, tokenizer.json or a folder of one")
    p.add_argument("text")
    p.set_defaults(func=cmd_encode)


def cmd_train(args: argparse.Namespace) -> None:
    from llamafoundry.tokenizer import train_tokenizer

    tok = train_tokenizer(
        args.files,
        args.output,
        args.vocab_size,
        input_sentence_size=args.input_sentence_size,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.output} ({tok.vocab_size} pieces)")


def cmd_encode(args: argparse.Namespace) -> None:
    from llamafoundry.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    ids = tok.encode(args.text)
    print(" ".join(str(i) for i in ids))
    print(" ".join(repr(tok.id_to_piece(i)) for i in ids))
