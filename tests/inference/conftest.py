"""Models for the inference tests: Karpathy's trained stories260K (real weights, grouped-query attention)
with a 512-piece tokenizer trained here, and small random models with Meta's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


@pytest.fixture(scope="session")
def stories_path(shared_data: Path) -> Path:
    return shared_data / "models" / "stories260K" / "stories260K.bin"


@pytest.fixture
def stories(stories_path: Path) -> Transformer:
    """A fresh copy per test (generation sets up a cache on the model, quantization changes it)."""
    model, _, _ = load_model(stories_path)
    return model


@pytest.fixture(scope="session")
def tok512(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """stories260K ships without its tokenizer; one of the same size, trained on Shakespeare, gives it text.
    A seeded sample of its lines: the same pieces every run."""
    out = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_tokenizer(
        [shared_data / "corpora" / "tinyshakespeare" / "input.txt"],
        out,
        vocab_size=512,
        input_sentence_size=20000,
        num_threads=1,
    )


@pytest.fixture(scope="session")
def stories_folder(stories_path: Path, tok512: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K and the 512-piece tokenizer as our native model folder."""
    model, _, _ = load_model(stories_path)
    return save_model(tmp_path_factory.mktemp("models") / "stories", model, tok512)


@pytest.fixture(scope="session")
def meta_tokenizer(shared_data: Path) -> Tokenizer:
    return load_tokenizer(shared_data / "models" / "llama_tokenizer" / "tokenizer.model")


@pytest.fixture
def random_model():
    """A factory of small random models (a fixture, so tests need not import this file)."""
    return _random_model


def _random_model(seed: int = 0, std: float = 0.08, **overrides: object) -> Transformer:
    """A small random model whose weights are spread wide enough (std) that greedy choices are not ties."""
    cfg = ModelConfig(
        **{
            "dim": 64,
            "n_layers": 2,
            "n_heads": 4,
            "vocab_size": 32000,
            "multiple_of": 32,
            "max_seq_len": 256,
            **overrides,
        }
    )
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, std)
    return model.eval()
