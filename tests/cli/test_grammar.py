"""One command-line grammar: the model first and positional, `-o/--output` for every output, the same
load options with the same defaults on every command that loads a model, and the old spellings still
working (with a deprecation line) for one release."""

from __future__ import annotations

import argparse

import pytest
import torch

from llamafoundry.checkpoint import load_model
from llamafoundry.cli import build_parser
from llamafoundry.cli.options import DEVICE_HELP
from llamafoundry.errors import UserError
from llamafoundry.train.distributed import pick_device
from tests.helpers import assert_user_error

LOADING_COMMANDS = ["info", "convert", "generate", "serve", "quantize", "eval"]
OUTPUT_COMMANDS = [
    ["convert", "M"],
    ["quantize", "M"],
    ["eval", "M", "--tasks", "boolq"],
    ["quickstart"],
    ["data", "run", "recipe.toml"],
    ["data", "tokenize", "in.txt", "--tokenizer", "t.model"],
    ["data", "train-classifier", "--positive", "p", "--negative", "n"],
    ["data", "train-reference-lm", "enwiki.xml.bz2"],
    ["data", "wiki-references", "dump.xml.bz2"],
    ["tokenizer", "train", "f.txt"],
    ["train", "--config", "r.toml"],
]


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", LOADING_COMMANDS)
def test_every_loading_command_takes_the_model_first_and_the_same_load_options(command):
    parser = _subparser(build_parser(), command)
    positionals = [a.dest for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS]
    assert positionals[0] == "model"
    options = _options(parser)
    for flag in ("--device", "--dtype", "--tokenizer", "--quantize", "--group-size"):
        assert flag in options, f"{command} lacks {flag}"
    assert options["--device"].default is None  # resolved alike everywhere: cuda if available, else cpu
    assert options["--quantize"].choices == ("int8", "int4")


@pytest.mark.parametrize("argv", OUTPUT_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_output_is_dash_o(argv):
    args = build_parser().parse_args([*argv, "-o", "somewhere"])
    assert str(args.output) == "somewhere"


def test_old_spellings_still_work_with_a_deprecation_line(tmp_path, cli, capfd):
    done = cli("convert", "llama-1m", tmp_path / "positional", "--to", "hf")
    assert done.returncode == 0 and "deprecated; use -o/--output" in done.stderr
    assert load_model(tmp_path / "positional")[2].dim == load_model("llama-1m")[2].dim

    done = cli("quantize", tmp_path / "positional", tmp_path / "q", "--method", "int8")
    assert done.returncode == 0 and "--method is deprecated; use --quantize" in done.stderr
    assert "deprecated; use -o/--output" in done.stderr
    assert load_model(tmp_path / "q")[0].quantization.method == "int8"

    done = cli("plan", "--preset", "llama-7b", "--gpus", "8")
    assert done.returncode == 0 and "--preset is deprecated" in done.stderr
    assert done.stdout == cli("plan", "llama-7b", "--gpus", "8").stdout

    assert build_parser().parse_args(["quickstart", "--out", "x"]).output.name == "x"
    assert "--out is deprecated" in capfd.readouterr().err
    argv = ["data", "train-classifier", "--positive", "p", "--negative", "n", "-o", "m.bin", "--quantize"]
    args = build_parser().parse_args(argv)
    assert args.old_quantize  # the command maps it to --compress (now the default), with a warning


def test_new_spellings_and_their_errors(tmp_path, cli):
    done = cli("convert", "llama-1m", "-o", tmp_path / "hf", "--to", "hf")
    assert done.returncode == 0 and "deprecated" not in done.stderr
    done = cli("quantize", tmp_path / "hf", "-o", tmp_path / "q4", "--quantize", "int4", "--group-size", 32)
    assert done.returncode == 0 and "deprecated" not in done.stderr
    assert load_model(tmp_path / "q4")[0].quantization.method == "int4"
    done = cli("info", tmp_path / "hf", "--quantize", "int8")
    assert done.returncode == 0 and "quantized:  int8" in done.stdout
    assert_user_error(cli("convert", "llama-1m"), "no output given; pass -o/--output")
    assert_user_error(cli("convert", "llama-1m", tmp_path / "a", "-o", tmp_path / "b"), "two outputs given")
    assert_user_error(cli("plan", "--gpus", "8"), "no model given")


def test_train_takes_the_same_device_option():
    options = _options(_subparser(build_parser(), "train"))
    assert options["--device"].default is None and options["--device"].help == DEVICE_HELP
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device"):
        pick_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no GPU is visible"):
            pick_device("cuda")
