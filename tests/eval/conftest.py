"""Fixtures for the evaluation tests: a scripted LM (a test double) and one small model in two folder formats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from llamafoundry.checkpoint import export
from llamafoundry.config import ModelConfig
from llamafoundry.eval.lm import LM
from llamafoundry.inference.detokenize import find_stop
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, load_tokenizer


class ScriptedLM(LM):
    """An LM whose answers the test sets: `loglikelihood` calls `score(context, continuation)`,
    `generate` calls `reply(context, params)` and cuts at the stop strings. Every request is recorded."""

    name = "scripted"

    def __init__(
        self,
        score: Callable[[str, str], float] | None = None,
        reply: Callable[[str, SamplingParams], str] | None = None,
    ) -> None:
        self.score, self.reply = score, reply
        self.ll_requests: list[tuple[str, str]] = []
        self.gen_requests: list[tuple[str, SamplingParams]] = []

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        self.ll_requests += requests
        return [(self.score(c, x), False) for c, x in requests]

    def generate(self, requests: Sequence[tuple[str, SamplingParams]], desc: str | None = None) -> list[str]:
        self.gen_requests += requests
        texts = [self.reply(c, p) for c, p in requests]
        return [text[: find_stop(text, p.stop)] for text, (_, p) in zip(texts, requests, strict=True)]


@pytest.fixture
def scripted() -> type[ScriptedLM]:
    """The ScriptedLM class (tests build one per case with their own scores and replies)."""
    return ScriptedLM


@pytest.fixture(scope="session")
def llama_tokenizer(shared_data: Path) -> Tokenizer:
    return load_tokenizer(shared_data / "models/llama_tokenizer/tokenizer.model")


@pytest.fixture(scope="session")
def tiny_model(llama_tokenizer: Tokenizer) -> Transformer:
    """A random LLaMA with Meta's 32,000-token vocabulary, small enough to score hundreds of examples fast."""
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=32000, multiple_of=32, max_seq_len=512)
    torch.manual_seed(0)
    return Transformer(cfg).eval()


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory, tiny_model: Transformer, llama_tokenizer: Tokenizer) -> dict[str, Path]:
    """The same weights as our native folder and as a Hugging Face folder."""
    root = tmp_path_factory.mktemp("models")
    return {fmt: export(root / fmt, tiny_model, llama_tokenizer, format=fmt) for fmt in ("native", "hf")}
