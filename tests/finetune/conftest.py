"""A tiny base model to finetune: a 512-piece tokenizer trained on Alpaca's text and random weights."""

import gzip
import json

import pytest
import torch

from llamafoundry.checkpoint import save_model
from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import train_tokenizer

TINY = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=128)


@pytest.fixture(scope="session")
def alpaca(shared_data) -> list[dict]:
    """Alpaca's first 5,000 records."""
    return json.loads(gzip.decompress((shared_data / "instructions" / "alpaca_5000.json.gz").read_bytes()))


@pytest.fixture(scope="session")
def base_model(tmp_path_factory, alpaca):
    """A native model folder: TINY with random weights and a tokenizer of Alpaca's first 1,000 records."""
    folder = tmp_path_factory.mktemp("base")
    text = folder / "text.txt"
    text.write_text("\n".join(f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in alpaca[:1000]))
    tokenizer = train_tokenizer([text], folder / "tokenizer.model", vocab_size=512)
    torch.manual_seed(0)
    return save_model(folder / "model", Transformer(TINY), tokenizer)


def finetune_args(base, data, out, **settings) -> list[str]:
    """`llamafoundry finetune` arguments for a seconds-long fp32 run: 4 rows of 128 tokens a step.

    `settings` override or add fields, with dots written as double underscores: train__steps=20.
    """
    values = {
        "data.seq_len": 128,
        "data.held_out": 8,
        "train.batch_tokens": 512,
        "train.micro_batch": 2,
        "train.lr": 3e-3,
        "train.steps": 12,
        "train.precision": "fp32",
        "output.tensorboard": "false",
    } | {key.replace("__", "."): value for key, value in settings.items()}
    options = [part for key, value in values.items() for part in (f"--{key}", str(value))]
    return ["finetune", str(base), "--data", *map(str, data), "-o", str(out), *options]
