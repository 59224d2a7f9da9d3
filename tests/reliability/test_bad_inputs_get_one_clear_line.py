"""Hostile command lines and files, the way a user types them: every one ends in one line that names the
problem, a non-zero exit, no traceback and nothing written (issue 12, item 7).

Each row is a command line built from small real inputs (a model in every format we read, a tokenizer,
token shards) and a fragment of the error it must print. Rows that go through a file (config.json,
params.json, a .pth, a llama2.c .bin) change one thing in a copy of a valid one.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from llamafoundry.checkpoint import export, load_model, save_model
from llamafoundry.config import ModelConfig
from llamafoundry.data.shards import build_shards
from llamafoundry.inference.quantize import QuantConfig
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import train_tokenizer
from tests.conftest import REPO
from tests.helpers import assert_user_error, tiny_train_args, write_llama2c

CFG = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=400, multiple_of=16, max_seq_len=64)
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


class Inputs:
    """Valid inputs of every kind, and copies of them with one thing broken."""

    def __init__(self, root: Path, shared_data: Path) -> None:
        self.root, self.benchmarks = root, shared_data
        self._n = itertools.count()
        text = shared_data / "corpora" / "tinyshakespeare" / "input.txt"
        self.tokenizer = train_tokenizer([text], root / "tokenizer.model", 400, input_sentence_size=2000)
        torch.manual_seed(0)
        model = Transformer(CFG)
        self.native = save_model(root / "native", model, self.tokenizer)
        self.meta = export(root / "meta", model, self.tokenizer, "meta")
        self.meta2 = export(root / "meta2", model, self.tokenizer, "meta", shards=2)
        self.hf = export(root / "hf", model, self.tokenizer, "hf")
        int4, _, _ = load_model(self.native, quantize=QuantConfig("int4", 32))
        self.int4 = save_model(root / "int4", int4, self.tokenizer)
        self.llama2c = write_llama2c(root / "tiny.bin", model)
        self.text = root / "prompts.txt"
        self.text.write_text("to be or not to be\n" * 40)
        self.docs = root / "docs.jsonl"
        paragraphs = text.read_text(encoding="utf-8")[:60000].split("\n\n")
        self.docs.write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
        self.tokens = root / "tokens"
        build_shards({"books": [self.docs]}, root / "tokenizer.model", self.tokens, workers=1)
        self.no_input_recipe = root / "no-input.toml"
        self.no_input_recipe.write_text(
            '[run]\noutput = "x"\n[sources.books]\ninputs = ["/nonexistent/*.txt"]\n'
        )

    def fresh(self, name: str) -> Path:
        return self.root / f"{name}-{next(self._n)}"

    def copy(self, folder: Path) -> Path:
        return Path(shutil.copytree(folder, self.fresh(folder.name)))

    def native_with(self, **model: object) -> Path:
        """Our folder with config.json's model fields replaced."""
        return self._json(self.native, "config.json", lambda c: c["model"].update(model))

    def quantized_with(self, **section: object) -> Path:
        """The int4 folder with its config.json's quantization fields replaced."""
        return self._json(self.int4, "config.json", lambda c: c["quantization"].update(section))

    def hf_with(self, **values: object) -> Path:
        return self._json(self.hf, "config.json", lambda c: c.update(values))

    def meta_with(self, **params: object) -> Path:
        return self._json(self.meta, "params.json", lambda c: c.update(params))

    def meta_holding(self, change: Callable[[dict], object]) -> Path:
        """The Meta folder whose consolidated.00.pth holds what `change` makes of its state dict."""
        folder = self.copy(self.meta)
        pth = folder / "consolidated.00.pth"
        torch.save(change(torch.load(pth, weights_only=True)), pth)
        return folder

    def llama2c_cut(self, size: int) -> Path:
        """The llama2.c file cut to its first `size` bytes (negative: that many bytes short)."""
        data = self.llama2c.read_bytes()
        path = self.fresh("cut").with_suffix(".bin")
        path.write_bytes(data[:size])
        return path

    def _json(self, folder: Path, name: str, change: Callable[[dict], None]) -> Path:
        folder = self.copy(folder)
        values = json.loads((folder / name).read_text())
        change(values)
        (folder / name).write_text(json.dumps(values))
        return folder


def _pickle_that_runs_code(marker: Path) -> object:
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # creates `marker` if anyone unpickles it

    return {"tok_embeddings.weight": Payload()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("inputs"), shared_data)


@dataclass(frozen=True)
class Bad:
    """A hostile command line: `args(inputs, out)` (`out`: where a command may write) and a fragment
    of the one line it must print."""

    id: str
    args: Callable[[Inputs, Path], list]
    says: str


def info(change: Callable[[Inputs], Path]) -> Callable[[Inputs, Path], list]:
    return lambda w, out: ["info", change(w)]


def train(**settings: object) -> Callable[[Inputs, Path], list]:
    """A seconds-long run of the tiny model, with `settings` (train__lr=...) changed."""
    return lambda w, out: tiny_train_args(w.tokens, out, **({"train__steps": 3} | settings))


def duration(**settings: object) -> Callable[[Inputs, Path], list]:
    """A tiny run whose length is `settings` (tokens or max_minutes) instead of steps."""
    return lambda w, out: tiny_train_args(w.tokens, out, **settings)


NAN, INF = float("nan"), float("inf")
BIG_JSON = 10**11  # the context that asked for 400 GB of rotary tables
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

CONFIG_FILES = [
    Bad("config.json dim '32'", info(lambda w: w.native_with(dim="32")), "dim must be a positive integer"),
    Bad("config.json norm_eps '1e-6'", info(lambda w: w.native_with(norm_eps="1e-6")), "norm_eps must be"),
    Bad(
        "config.json rope_theta '10000'", info(lambda w: w.native_with(rope_theta="10000")), "rope_theta must"
    ),
    Bad(
        "config.json ffn_dim_multiplier '1.3'", info(lambda w: w.native_with(ffn_dim_multiplier="1.3")), "ffn"
    ),
    Bad("config.json max_seq_len 1e11", info(lambda w: w.native_with(max_seq_len=BIG_JSON)), "max_seq_len"),
    Bad("config.json dim 2**40", info(lambda w: w.native_with(dim=2**40)), "dim must be at most 65,536"),
    Bad(
        "config.json max_seq_len 64.0", info(lambda w: w.native_with(max_seq_len=64.0)), "max_seq_len must be"
    ),
    Bad("config.json norm_eps -1", info(lambda w: w.native_with(norm_eps=-1)), "norm_eps must be"),
    Bad("config.json norm_eps 0", info(lambda w: w.native_with(norm_eps=0)), "norm_eps must be"),
    Bad("config.json norm_eps NaN", info(lambda w: w.native_with(norm_eps=NAN)), "norm_eps must be"),
    Bad("config.json norm_eps Infinity", info(lambda w: w.native_with(norm_eps=INF)), "norm_eps must be"),
    Bad("config.json norm_eps true", info(lambda w: w.native_with(norm_eps=True)), "norm_eps must be"),
    Bad("config.json norm_eps null", info(lambda w: w.native_with(norm_eps=None)), "norm_eps must be"),
    Bad("config.json rope_theta 0", info(lambda w: w.native_with(rope_theta=0)), "rope_theta must be"),
    Bad("config.json rope_theta -5", info(lambda w: w.native_with(rope_theta=-5)), "rope_theta must be"),
    Bad("config.json rope_theta 1e400", info(lambda w: w.native_with(rope_theta=10**400)), "rope_theta must"),
    Bad("config.json rope_theta null", info(lambda w: w.native_with(rope_theta=None)), "rope_theta must be"),
    Bad("config.json ffn_dim_multiplier -1", info(lambda w: w.native_with(ffn_dim_multiplier=-1)), "ffn_dim"),
    Bad("config.json ffn_dim_multiplier 0", info(lambda w: w.native_with(ffn_dim_multiplier=0)), "ffn_dim"),
    Bad(
        "config.json ffn_dim_multiplier inf", info(lambda w: w.native_with(ffn_dim_multiplier=INF)), "ffn_dim"
    ),
    Bad("config.json n_heads 3", info(lambda w: w.native_with(n_heads=3)), "not divisible by n_heads"),
    Bad("config.json n_kv_heads 3", info(lambda w: w.native_with(n_kv_heads=3)), "not a multiple of n_kv"),
    Bad("config.json multiple_of 0", info(lambda w: w.native_with(multiple_of=0)), "multiple_of must be"),
    Bad(
        "config.json vocab_size 400.0", info(lambda w: w.native_with(vocab_size=400.0)), "vocab_size must be"
    ),
    Bad("config.json unknown key", info(lambda w: w.native_with(n_experts=8)), "unknown model config keys"),
    Bad("quantization null", info(lambda w: w.quantized_with(method=None)), "unknown quantization None"),
    Bad("quantization int9", info(lambda w: w.quantized_with(method="int9")), "unknown quantization"),
    Bad("quantization group_size 32.0", info(lambda w: w.quantized_with(group_size=32.0)), "group size"),
    Bad("quantization group_size '32'", info(lambda w: w.quantized_with(group_size="32")), "group size"),
    Bad("quantization group_size 64", info(lambda w: w.quantized_with(group_size=64)), "has shape"),
    Bad("quantization layer int5", info(lambda w: w.quantized_with(layers={"output": "int5"})), "int5"),
    Bad("quantization unknown layer", info(lambda w: w.quantized_with(layers={"bogus": "int4"})), "bogus"),
    Bad("quantization int4 layers, int8 method", info(lambda w: w.quantized_with(method="int8")), "int4"),
    Bad("quantization unknown setting", info(lambda w: w.quantized_with(bits=4)), "unknown quantization"),
    Bad("HF hidden_size '32'", info(lambda w: w.hf_with(hidden_size="32")), "dim must be a positive integer"),
    Bad("HF rms_norm_eps '1e-6'", info(lambda w: w.hf_with(rms_norm_eps="1e-6")), "norm_eps must be"),
    Bad("HF rms_norm_eps -1", info(lambda w: w.hf_with(rms_norm_eps=-1)), "norm_eps must be"),
    Bad(
        "HF max_position_embeddings 1e11",
        info(lambda w: w.hf_with(max_position_embeddings=BIG_JSON)),
        "max_seq",
    ),
    Bad(
        "HF rope_theta '1e4'",
        info(lambda w: w.hf_with(rope_parameters={"rope_type": "default", "rope_theta": "1e4"})),
        "rope_theta must be",
    ),
    Bad("HF rope_parameters 'x'", info(lambda w: w.hf_with(rope_parameters="x")), "rope_parameters"),
    Bad("HF num_attention_heads 0", info(lambda w: w.hf_with(num_attention_heads=0)), "n_heads must be"),
    Bad("HF num_key_value_heads '2'", info(lambda w: w.hf_with(num_key_value_heads="2")), "n_kv_heads must"),
    Bad("HF hidden_act gelu", info(lambda w: w.hf_with(hidden_act="gelu")), "hidden_act 'gelu'"),
    Bad("HF rope_type yarn", info(lambda w: w.hf_with(rope_parameters={"rope_type": "yarn"})), "'yarn'"),
    Bad(
        "HF rope_type llama3 without its factors",
        info(lambda w: w.hf_with(rope_parameters={"rope_type": "llama3", "factor": 8.0})),
        "lacks 'low_freq_factor'",
    ),
    Bad(
        "HF llama3 high_freq_factor = low",
        info(lambda w: w.hf_with(rope_parameters=LLAMA3_ROPE | {"high_freq_factor": 1.0})),
        "high_freq_factor",
    ),
    Bad(
        "HF tie_word_embeddings 'yes'", info(lambda w: w.hf_with(tie_word_embeddings="yes")), "tie_embeddings"
    ),
    Bad("params.json norm_eps -1", info(lambda w: w.meta_with(norm_eps=-1)), "norm_eps must be"),
    Bad("params.json norm_eps '1e-6'", info(lambda w: w.meta_with(norm_eps="1e-6")), "norm_eps must be"),
    Bad("params.json rope_theta 'x'", info(lambda w: w.meta_with(rope_theta="x")), "rope_theta must be"),
    Bad("params.json ffn_dim_multiplier '1.3'", info(lambda w: w.meta_with(ffn_dim_multiplier="1.3")), "ffn"),
    Bad("params.json dim '32'", info(lambda w: w.meta_with(dim="32")), "dim must be a positive integer"),
    Bad(
        ".pth of ints", info(lambda w: w.meta_holding(lambda s: dict.fromkeys(s, 5))), "state dict of tensors"
    ),
    Bad(".pth of strings", info(lambda w: w.meta_holding(lambda s: dict.fromkeys(s, "x"))), "state dict of"),
    Bad(".pth nested dict", info(lambda w: w.meta_holding(lambda s: {"layers": s})), "state dict of tensors"),
    Bad(".pth int key", info(lambda w: w.meta_holding(lambda s: s | {1: s["norm.weight"]})), "state dict of"),
    Bad(
        ".pth one float among tensors",
        info(lambda w: w.meta_holding(lambda s: s | {"norm.weight": 3.0})),
        "float",
    ),
    Bad(".pth list", info(lambda w: w.meta_holding(lambda s: list(s.values()))), "state dict of tensors"),
    Bad(
        ".pth 0-d embedding",
        info(lambda w: w.meta_holding(lambda s: s | {"tok_embeddings.weight": torch.tensor(1.0)})),
        "tok_embeddings.weight matrix",
    ),
    Bad(
        "Meta shards with other tensors",
        info(lambda w: _shard_without(w, "norm.weight")),
        "holds other tensors",
    ),
    Bad("llama2.c .bin cut inside a float", info(lambda w: w.llama2c_cut(-2)), "truncated"),
    Bad("llama2.c .bin cut after 1 byte", info(lambda w: w.llama2c_cut(29)), "truncated"),
    Bad("llama2.c .bin cut at a float", info(lambda w: w.llama2c_cut(-4)), "truncated"),
    Bad("llama2.c .bin header only", info(lambda w: w.llama2c_cut(28)), "truncated"),
]


def _shard_without(w: Inputs, name: str) -> Path:
    folder = w.copy(w.meta2)
    pth = folder / "consolidated.01.pth"
    state = torch.load(pth, weights_only=True)
    del state[name]
    torch.save(state, pth)
    return folder


def generate(*flags: object, prompt: str = "to be") -> Callable[[Inputs, Path], list]:
    return lambda w, out: ["generate", w.native, prompt, "--max-new-tokens", 2, *flags]


def convert(*flags: object) -> Callable[[Inputs, Path], list]:
    return lambda w, out: ["convert", w.llama2c, "-o", out, *flags]


def evaluate(*flags: object) -> Callable[[Inputs, Path], list]:
    return lambda w, out: [
        "eval",
        w.native,
        "--tasks",
        "boolq",
        "--data-dir",
        w.benchmarks,
        "--limit",
        2,
        "-o",
        out,
        *flags,
    ]


def tokenize(
    *flags: object, source: Callable[[Inputs], Path] = lambda w: w.docs
) -> Callable[[Inputs, Path], list]:
    return lambda w, out: ["data", "tokenize", source(w), "--tokenizer", w.tokenizer.path, "-o", out, *flags]


def classifier(*flags: object) -> Callable[[Inputs, Path], list]:
    return lambda w, out: [
        "data",
        "train-classifier",
        "--positive",
        w.text,
        "--negative",
        w.docs,
        "-o",
        out,
        *flags,
    ]


def quickstart(*flags: object) -> Callable[[Inputs, Path], list]:
    # A recipe whose input is missing stops today's code at once instead of building a corpus first.
    return lambda w, out: ["quickstart", "-o", out, "--data-recipe", w.no_input_recipe, *flags]


FLAGS = [
    Bad("generate --device cuda", generate("--device", "cuda"), "no GPU is visible"),
    Bad("generate --device cuda:1", generate("--device", "cuda:1"), "no GPU is visible"),
    Bad("generate --device bogus", generate("--device", "bogus"), "unknown device 'bogus'"),
    Bad("generate --device ''", generate("--device", ""), "unknown device ''"),
    Bad("generate --device meta", generate("--device", "meta"), "--device meta"),
    Bad("generate --seed 2**70", generate("--seed", 2**70), "seed must be"),
    Bad("generate --max-new-tokens 0", generate("--max-new-tokens", 0), "max_new_tokens must be"),
    Bad("generate --temperature nan", generate("--temperature", "nan"), "temperature must be"),
    Bad("generate --top-p 2", generate("--top-p", 2), "top_p must be"),
    Bad("generate --top-k -1", generate("--top-k", -1), "top_k must be"),
    Bad("generate --repetition-penalty 0", generate("--repetition-penalty", 0), "repetition_penalty"),
    Bad("generate --max-seq-len 1", generate("--max-seq-len", 1), "--max-seq-len must be at least 2"),
    Bad("generate --stop ''", generate("--stop", ""), "stop strings"),
    Bad("generate --dtype float64", generate("--dtype", "float64"), "unknown dtype"),
    Bad("generate --group-size 7", generate("--quantize", "int4", "--group-size", 7), "group size"),
    Bad("generate --tokenizer not-a-tokenizer", generate("--tokenizer", REPO / "README.md"), "SentencePiece"),
    Bad("generate prompt of invalid UTF-8", generate(prompt="caf\udce9"), "not valid UTF-8 (byte 0xe9"),
    Bad("generate prompt too long", generate(prompt="to be " * 100), "shorten the prompt"),
    Bad("serve --port 99999", lambda w, out: ["serve", w.native, "--port", 99999], "--port must be"),
    Bad("serve --port 65536", lambda w, out: ["serve", w.native, "--port", 65536], "--port must be"),
    Bad("serve --port -1", lambda w, out: ["serve", w.native, "--port", -1], "--port must be"),
    Bad("serve --max-batch 0", lambda w, out: ["serve", w.native, "--max-batch", 0], "--max-batch must"),
    Bad(
        "quantize --eval-tokens 0",
        lambda w, out: ["quantize", w.native, "-o", out, "--eval-text", w.text, "--eval-tokens", 0],
        "--eval-tokens must be at least 1",
    ),
    Bad(
        "quantize --eval-tokens -1",
        lambda w, out: ["quantize", w.native, "-o", out, "--eval-text", w.text, "--eval-tokens", -1],
        "--eval-tokens must be at least 1",
    ),
    Bad(
        "quantize --group-size 0",
        lambda w, out: ["quantize", w.native, "-o", out, "--quantize", "int4", "--group-size", 0],
        "group size",
    ),
    Bad(
        "quantize --device bogus",
        lambda w, out: ["quantize", w.native, "-o", out, "--device", "bogus"],
        "bogus",
    ),
    Bad("convert --max-seq-len -5", convert("--max-seq-len", -5), "--max-seq-len must be at least 1"),
    Bad("convert --max-seq-len 0", convert("--max-seq-len", 0), "--max-seq-len must be at least 1"),
    Bad("convert --max-seq-len 1e11", convert("--max-seq-len", 10**11), "max_seq_len must be at most"),
    Bad("convert --shards 0", convert("--to", "meta", "--shards", 0), "--shards must be at least 1"),
    Bad("convert --to bogus", convert("--to", "bogus"), "unknown export format"),
    Bad("convert --to gguf --dtype q4", convert("--to", "gguf", "--dtype", "q4"), "GGUF export supports"),
    Bad("convert --device bogus", convert("--device", "bogus"), "unknown device"),
    Bad("info --device bogus", lambda w, out: ["info", w.native, "--device", "bogus"], "unknown device"),
    Bad("info --device cuda", lambda w, out: ["info", w.native, "--device", "cuda"], "no GPU is visible"),
    Bad("info of a text file", lambda w, out: ["info", w.text], "no known model format"),
    Bad("eval --limit nan", evaluate("--limit", "nan"), "--limit must be positive"),
    Bad("eval --limit inf", evaluate("--limit", "inf"), "--limit must be finite"),
    Bad("eval --limit 0", evaluate("--limit", 0), "--limit must be positive"),
    Bad("eval --batch-tokens 0", evaluate("--batch-tokens", 0), "--batch-tokens must be at least 1"),
    Bad("eval --batch-size 0", evaluate("--batch-size", 0), "--batch-size must be at least 1"),
    Bad("eval --max-new-tokens -1", evaluate("--max-new-tokens", -1), "max-new-tokens must be at least 1"),
    Bad("eval --samples -1", evaluate("--samples", -1), "--samples must be 0 or more"),
    Bad("eval --shots -1", evaluate("--shots", -1), "--shots takes counts"),
    Bad("eval --device bogus", evaluate("--device", "bogus"), "unknown device"),
    Bad(
        "eval --tasks bogus", lambda w, out: ["eval", w.native, "--tasks", "bogus", "-o", out], "unknown task"
    ),
    Bad("plan --tokens -5", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tokens", -5], "--tokens"),
    Bad("plan --tokens nan", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tokens", "nan"], "--tokens"),
    Bad("plan --tokens inf", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tokens", "inf"], "--tokens"),
    Bad("plan --tokens 0", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tokens", 0], "--tokens"),
    Bad("plan --seq-len 0", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--seq-len", 0], "--seq-len"),
    Bad("plan --seq-len -5", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--seq-len", -5], "--seq-len"),
    Bad(
        "plan --micro-batch 0",
        lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--micro-batch", 0],
        "--micro",
    ),
    Bad(
        "plan --tp 0", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tp", 0], "--tp must be at least 1"
    ),
    Bad(
        "plan --tp -2",
        lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tp", -2],
        "--tp must be at least 1",
    ),
    Bad("plan --tp 3", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--tp", 3], "tp 3 does not divide"),
    Bad("plan --mfu 0", lambda w, out: ["plan", "llama-7b", "--gpus", 8, "--mfu", 0], "MFU must be"),
    Bad("plan --gpus 0", lambda w, out: ["plan", "llama-7b", "--gpus", 0], "--gpus must be at least 1"),
    Bad("footprint -5", lambda w, out: ["footprint", -5], "GPU-hours must be"),
    Bad("footprint nan", lambda w, out: ["footprint", "nan"], "GPU-hours must be"),
    Bad("footprint inf", lambda w, out: ["footprint", "inf"], "GPU-hours must be"),
    Bad("footprint --power -1", lambda w, out: ["footprint", 10, "--power", -1], "--power must be positive"),
    Bad("footprint --power 0", lambda w, out: ["footprint", 10, "--power", 0], "--power must be positive"),
    Bad(
        "footprint --power nan",
        lambda w, out: ["footprint", 10, "--power", "nan"],
        "--power must be positive",
    ),
    Bad(
        "tokenizer train --vocab-size 0",
        lambda w, out: ["tokenizer", "train", w.text, "-o", out / "t.model", "--vocab-size", 0],
        "vocab_size",
    ),
    Bad(
        "tokenizer train --input-sentence-size -5",
        lambda w, out: [
            "tokenizer",
            "train",
            w.docs,
            "-o",
            out / "t.model",
            "--vocab-size",
            400,
            "--input-sentence-size",
            -5,
        ],
        "input_sentence_size must be 0",
    ),
    Bad(
        "tokenizer encode invalid UTF-8",
        lambda w, out: ["tokenizer", "encode", w.tokenizer.path, "caf\udce9"],
        "not valid UTF-8",
    ),
    Bad(
        "tokenizer encode not-a-tokenizer",
        lambda w, out: ["tokenizer", "encode", w.text, "hi"],
        "SentencePiece",
    ),
    Bad("data tokenize --workers 0", tokenize("--workers", 0), "--workers must be at least 1"),
    Bad("data tokenize --workers -2", tokenize("--workers", -2), "--workers must be at least 1"),
    Bad("data tokenize --val-fraction 1", tokenize("--val-fraction", 1), "val_fraction must be in [0, 1)"),
    Bad("data tokenize --val-fraction nan", tokenize("--val-fraction", "nan"), "val_fraction must be in"),
    Bad(
        "data tokenize --doc-separator ''",
        tokenize("--doc-separator", "", source=lambda w: w.text),
        "separator",
    ),
    Bad(
        "data tokenize text 5",
        tokenize(source=lambda w: _file(w, "num.jsonl", b'{"text": 5}\n')),
        "'text' string",
    ),
    Bad(
        "data tokenize a JSON list",
        tokenize(source=lambda w: _file(w, "l.jsonl", b"[1, 2]\n")),
        "JSON object",
    ),
    Bad("data tokenize invalid UTF-8", tokenize(source=lambda w: _file(w, "b.txt", b"caf\xe9\n")), "UTF-8"),
    Bad(
        "data run --workers 0", lambda w, out: ["data", "run", w.no_input_recipe, "--workers", 0], "--workers"
    ),
    Bad("data run mixture weight nan", lambda w, out: _data_run(w, out, "weight = nan"), "weight must be"),
    Bad(
        "data run mixture epochs inf", lambda w, out: _data_run(w, out, "weight = 1\nepochs = inf"), "epochs"
    ),
    Bad("data train-classifier --epochs 0", classifier("--epochs", 0), "epochs must be at least 1"),
    Bad("data train-classifier --lr nan", classifier("--lr", "nan"), "lr must be"),
    Bad("data train-classifier --lr -1", classifier("--lr", -1), "lr must be"),
    Bad("data train-classifier --lr 1000", classifier("--lr", 1000), "diverged"),
    Bad("data train-classifier --dim 0", classifier("--dim", 0), "dim must be at least 1"),
    Bad("data train-classifier --word-ngrams 0", classifier("--word-ngrams", 0), "word_ngrams must be"),
    Bad("quickstart --minutes nan", quickstart("--minutes", "nan"), "minutes must be"),
    Bad("quickstart --minutes inf", quickstart("--minutes", "inf"), "minutes must be"),
    Bad("quickstart --minutes 0", quickstart("--minutes", 0), "minutes must be"),
    Bad("quickstart --vocab-size 0", quickstart("--vocab-size", 0), "vocab_size must be at least"),
]


def _data_run(w: Inputs, out: Path, mixture: str) -> list:
    """`data run` of the docs with `mixture` in their [mixture.books] table."""
    recipe = w.fresh("recipe").with_suffix(".toml")
    recipe.write_text(
        f'[sources.books]\nreader = "jsonl"\ninputs = ["{w.docs}"]\n[mixture.books]\n{mixture}\n'
    )
    return ["data", "run", recipe, "-o", out, "--workers", 1, "--quiet"]


def _file(w: Inputs, name: str, content: bytes) -> Path:
    path = w.fresh("file") / name
    path.parent.mkdir()
    path.write_bytes(content)
    return path


RECIPES = [
    Bad("train --train.log_every 0", train(train__log_every=0), "train.log_every must be at least 1"),
    Bad("train --train.lr nan", train(train__lr="nan"), "train.lr must be"),
    Bad("train --train.lr inf", train(train__lr="inf"), "train.lr must be"),
    Bad("train --train.lr -1", train(train__lr=-1), "train.lr must be"),
    Bad("train --train.beta1 2", train(train__beta1=2), "train.beta1 must be in [0, 1)"),
    Bad("train --train.beta1 1", train(train__beta1=1), "train.beta1 must be in [0, 1)"),
    Bad("train --train.beta2 -0.1", train(train__beta2=-0.1), "train.beta2 must be in [0, 1)"),
    Bad("train --train.steps -5", train(train__steps=-5), "train.steps must be"),
    Bad("train --train.grad_clip -1", train(train__grad_clip=-1), "train.grad_clip must be"),
    Bad("train --train.grad_clip 0", train(train__grad_clip=0), "train.grad_clip must be"),
    Bad("train --train.grad_clip nan", train(train__grad_clip="nan"), "train.grad_clip must be"),
    Bad("train --train.warmup_steps 100 of 3", train(train__warmup_steps=100), "warmup_steps 100 exceeds"),
    Bad("train --train.warmup_steps -7", train(train__warmup_steps=-7), "train.warmup_steps must be"),
    Bad("train --train.min_lr_ratio 2", train(train__min_lr_ratio=2), "train.min_lr_ratio must be"),
    Bad("train --train.min_lr_ratio nan", train(train__min_lr_ratio="nan"), "train.min_lr_ratio must be"),
    Bad("train --train.weight_decay -1", train(train__weight_decay=-1), "train.weight_decay must be"),
    Bad("train --train.weight_decay nan", train(train__weight_decay="nan"), "train.weight_decay must be"),
    Bad("train --train.tokens -5", duration(train__tokens=-5), "train.tokens must be"),
    Bad("train --train.max_minutes -1", duration(train__max_minutes=-1), "train.max_minutes must be"),
    Bad("train --train.max_minutes nan", duration(train__max_minutes="nan"), "train.max_minutes must be"),
    Bad("train --train.max_minutes inf", duration(train__max_minutes="inf"), "train.max_minutes must be"),
    Bad("train --train.seed 2**70", train(train__seed=2**70), "train.seed must be"),
    Bad("train --eval.every -1", train(eval__every=-1), "eval.every must be"),
    Bad("train --eval.batches -1", train(eval__batches=-1), "eval.batches must be"),
    Bad("train --checkpoint.every -1", train(checkpoint__every=-1), "checkpoint.every must be"),
    Bad("train --checkpoint.keep -1", train(checkpoint__keep=-1), "checkpoint.keep must be"),
    Bad("train --parallel.dp_shard -5", train(parallel__dp_shard=-5), "parallel.dp_shard"),
    Bad("train --parallel.tp -1", train(parallel__tp=-1), "parallel.tp must be"),
    Bad("train --train.micro_batch -8", train(train__micro_batch=-8), "train.micro_batch must be"),
    Bad("train --train.batch_tokens -1", train(train__batch_tokens=-1), "train.batch_tokens must be"),
    Bad("train --data.seq_len -64", train(data__seq_len=-64), "data.seq_len must be"),
    Bad("train --model.norm_eps -1", train(model__norm_eps=-1), "norm_eps must be"),
    Bad("train --model.norm_eps nan", train(model__norm_eps="nan"), "norm_eps must be"),
    Bad("train --model.rope_theta 0", train(model__rope_theta=0), "rope_theta must be"),
    Bad("train --model.max_seq_len 1e11", train(model__max_seq_len=10**11), "max_seq_len must be at most"),
    Bad("train --model.ffn_dim_multiplier -1", train(model__ffn_dim_multiplier=-1), "ffn_dim_multiplier"),
    Bad("train --model.ffn_dim_multiplier inf", train(model__ffn_dim_multiplier="inf"), "ffn_dim_multiplier"),
    Bad("train --model.dim 1.5", train(model__dim=1.5), "model.dim must be int"),
    Bad("train --train.precision fp16", train(train__precision="fp16"), "train.precision must be one of"),
    Bad("train --train.steps 2.5", train(train__steps=2.5), "train.steps must be int"),
    Bad("train --train.steps with --train.tokens", train(train__tokens=1000), "exactly one of"),
    Bad("train --data.tokens a tokenizer", train(data__tokens="/nonexistent"), "does not exist"),
    Bad("train --device bogus", lambda w, out: train()(w, out) + ["--device", "bogus"], "unknown device"),
    Bad("train --device cuda", lambda w, out: train()(w, out) + ["--device", "cuda"], "no GPU is visible"),
    Bad("train TOML lr '3e-4'", lambda w, out: _toml(w, out, '[train]\nlr = "3e-4"\n'), "lr must be float"),
    Bad("train TOML steps -5", lambda w, out: _toml(w, out, "[train]\nsteps = -5\n"), "train.steps must be"),
    Bad("train TOML lr nan", lambda w, out: _toml(w, out, "[train]\nsteps = 3\nlr = nan\n"), "train.lr must"),
    Bad("train TOML [train] = 5", lambda w, out: _toml(w, out, "train = 5\n"), "[train] must be a table"),
]


def _toml(w: Inputs, out: Path, text: str) -> list:
    config = w.fresh("run").with_suffix(".toml")
    config.write_text(text)
    return ["train", "--config", config, "--data.tokens", w.tokens, "--output.dir", out]


CASES = [
    pytest.param(case, id=case.id, marks=[NO_CUDA] if "cuda" in case.id else [])
    for case in CONFIG_FILES + FLAGS + RECIPES
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_line(case: Bad, inputs: Inputs, tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    result = cli(*case.args(inputs, out))
    assert_user_error(result, case.says)
    assert result.stdout == ""
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_a_pickle_that_runs_code_is_refused_unrun(inputs: Inputs, cli) -> None:
    marker = inputs.fresh("ran")
    folder = inputs.meta_holding(lambda state: _pickle_that_runs_code(marker))
    assert_user_error(cli("info", folder), "not a readable PyTorch weights file")
    assert not marker.exists()


# Prompts on standard input: a line that is not UTF-8 gets its one error line and the session goes on
# (as an oversized prompt does); the exit stays 0, as the other prompts were answered.
UNDECODABLE = b"caf\xe9\n" + bytes(range(256)) + b"\nto be\n"  # a Latin-1 word; every byte value


def _stdin_errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert all(line.startswith("llamafoundry generate: error: the text is not valid UTF-8") for line in lines)
    return lines


def test_undecodable_stdin_lines_are_reported_one_by_one(inputs: Inputs) -> None:
    # A strict UTF-8 stdin (a UTF-8 locale): Python itself cannot decode these lines.
    done = subprocess.run(
        [sys.executable, "-m", "llamafoundry.cli", "generate", str(inputs.native), "--max-new-tokens", "2"],
        input=UNDECODABLE,
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        timeout=120,
    )
    assert done.returncode == 0
    errors = _stdin_errors(done.stderr.decode())
    assert len(errors) == 2 and "byte 0xe9 at character 3" in errors[0]  # caf\xe9; bytes 11..255
    # "to be" and the control characters 0..9 were answered: a completion each, ended by a newline (the
    # untrained model's two tokens may be blank, so the text itself proves nothing).
    assert done.stdout.count(b"\n") >= 2


def test_escaped_stdin_bytes_are_reported_too(inputs: Inputs, cli) -> None:
    # A C or POSIX locale reads undecodable bytes as surrogates (surrogateescape), as argv always does.
    done = cli(
        "generate", inputs.native, "--max-new-tokens", 2, stdin=UNDECODABLE.decode("utf-8", "surrogateescape")
    )
    assert done.returncode == 0
    assert len(_stdin_errors(done.stderr)) == 2
    assert done.stdout.strip()


def test_no_clipping_is_spelled_inf(inputs: Inputs, tmp_path: Path, cli) -> None:
    """The way out the grad_clip error names: inf trains, and the run's config.toml reads it back."""
    from llamafoundry.train.recipe import load_run_recipe

    done = cli(*tiny_train_args(inputs.tokens, tmp_path / "run", train__steps=2, train__grad_clip="inf"))
    assert done.returncode == 0, done.stderr
    assert load_run_recipe(tmp_path / "run" / "config.toml").train.grad_clip == float("inf")
