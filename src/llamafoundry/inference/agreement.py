"""Whether a decoding setting changes what greedy decoding says: the check behind the fast defaults.

A 16-bit KV cache, compiled kernels or quantized weights move logits by rounding errors. Greedy decoding
only notices where the two most likely tokens are closer than that error (a near-tie): from there on the
texts differ, and neither is wrong. `greedy_divergence` decodes one prompt greedily twice, with exact
float32 settings and with the settings under test, and reports the first step where the tokens differ,
with the exact run's margin between its two best tokens there and the largest log-probability
difference seen on the steps before it, so that a reader (or a test) can tell a near-tie from a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.model import Transformer


@dataclass(frozen=True)
class Divergence:
    """`step`: the first step whose greedy token differs (None: none in `steps`); `margin`: the exact
    run's log-probability gap between its best two tokens at that step; `error`: the largest difference
    of the chosen tokens' log-probabilities between the runs over the steps they agree on."""

    steps: int
    step: int | None
    margin: float | None
    error: float

    @property
    def at_near_tie(self) -> bool:
        """Whether the tokens differ only where the exact run's two best are within a few times the
        measured rounding error of each other."""
        return self.step is None or (self.margin is not None and self.margin <= 4 * self.error + 1e-6)

    def describe(self) -> str:
        if self.step is None:
            return f"greedy tokens equal for {self.steps} steps (log-prob difference <= {self.error:.1e})"
        where = f"greedy tokens equal for {self.step} of {self.steps} steps, then differ where the best two"
        verdict = "a near-tie" if self.at_near_tie else "NOT a near-tie"
        return f"{where} are {self.margin:.1e} apart (rounding error {self.error:.1e}): {verdict}"


def greedy_divergence(
    model: Transformer, prompt: Sequence[int], steps: int, fast: Generator | None = None
) -> Divergence:
    """Decode `prompt` greedily for `steps` tokens exactly (float32 weights and cache, eager) and with
    the generator under test (default: one with the Generator's defaults); where do they part?"""
    params = SamplingParams(max_new_tokens=steps, ignore_eos=True, logprobs=2)
    exact = _events(Generator(model, compile=False, kv_cache_dtype=torch.float32), prompt, params)
    fast = _events(fast or Generator(model), prompt, params)
    error = 0.0
    for step, (a, b) in enumerate(zip(exact, fast, strict=True)):
        if a.token != b.token:
            best, second = a.logprobs.top[0][1], a.logprobs.top[1][1]
            return Divergence(steps, step, best - second, error)
        error = max(error, abs(a.logprobs.logprob - b.logprobs.logprob))
    return Divergence(steps, None, None, error)


def _events(generator: Generator, prompt: Sequence[int], params: SamplingParams) -> list:
    return [event for events in generator.stream([list(prompt)], params) for event in events]
