"""maj1@k and pass@k need k different samples of one prompt, and the same k on every run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llamafoundry.eval.lm import LlamaFoundryLM
from llamafoundry.eval.tasks.base import RunConfig
from llamafoundry.eval.tasks.math import GSM8k
from llamafoundry.inference.sampling import SamplingParams


class RecordingLM(LlamaFoundryLM):
    """Our LM, keeping every generate call's requests and outputs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list[tuple[str, SamplingParams]], list[str]]] = []

    def generate(self, requests: Sequence[tuple[str, SamplingParams]], desc: str | None = None) -> list[str]:
        out = super().generate(requests, desc)
        self.calls.append((list(requests), out))
        return out


def test_equal_sampled_requests_give_different_samples_every_run_the_same(tiny_model, llama_tokenizer):
    """lm-eval's repeats send k equal requests, seed and all: each must still draw its own sample."""
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer, max_batch=4)  # the 6 requests span two batches
    requests = [("The", SamplingParams(max_new_tokens=8, temperature=1.0, seed=0))] * 6
    first = lm.generate(requests)
    assert len(set(first)) == 6
    assert lm.generate(requests) == first


def test_gsm8k_samples_of_one_problem_differ_and_reproduce(shared_data: Path, tiny_model, llama_tokenizer):
    k = 4
    runs = []
    for _ in range(2):
        lm = RecordingLM(tiny_model, llama_tokenizer)
        GSM8k().run(lm, shared_data, RunConfig(limit=2, shots=1, samples=k, max_new_tokens=6))
        (_, greedy), (requests, samples) = lm.calls
        assert len(requests) == 2 * k and all(p.temperature > 0 for _, p in requests)
        for problem in range(2):
            assert len(set(samples[problem * k : (problem + 1) * k])) == k
        runs.append((greedy, samples))
    assert runs[0] == runs[1]
