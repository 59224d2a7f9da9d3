"""How the next token is chosen: greedy, temperature, top-k, top-p, repetition penalty, seeded per request.

The logits processors run in the order Hugging Face `generate` applies them (repetition penalty,
temperature, top-k, top-p), vectorised over the rows of a batch, so one batch can mix requests with
different settings. Each row samples with its own `torch.Generator`: a request's seed reproduces its
tokens whatever else shares the batch.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llamafoundry.errors import UserError

# What torch.Generator.manual_seed accepts (negative seeds wrap around as two's complement).
SEED_RANGE = (-(2**63), 2**64 - 1)
# Two orders of magnitude either side of off (CTRL used 1.2): far beyond, float32 logits overflow to inf
# and the softmax gives NaN.
PENALTY_RANGE = (0.01, 100.0)
# Below this temperature sampling is greedy: dividing logits by a denormal turns them into inf and the
# softmax into NaN (vLLM draws the same line).
GREEDY_BELOW = 1e-5
BIAS_RANGE = (-100.0, 100.0)  # OpenAI's logit_bias values
MAX_LOGPROBS = 20  # alternatives per token a request may ask for (OpenAI's top_logprobs ceiling)


@dataclass(frozen=True)
class SamplingParams:
    """The settings of one request. `temperature=0` (anything below 1e-5) is greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    repetition_penalty: float = 1.0  # CTRL (Keskar et al., 2019); 1: off
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings
    seed: int | None = None
    stop_token_ids: tuple[
        int, ...
    ] = ()  # more ids that end generation like EOS (llama2.c models end with BOS)
    ignore_eos: bool = False  # keep going after the end-of-sequence token (benchmarks)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to its logit before sampling
    logprobs: int | None = None  # each output token's log-probability and this many alternatives'
    prompt_logprobs: int | None = None  # the same for each prompt token (from the prefill)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise UserError(f"invalid sampling parameters: {problem}")

    def _problem(self) -> str | None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            return f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}"
        if not math.isfinite(self.temperature) or self.temperature < 0:
            return f"temperature must be >= 0, got {self.temperature}"
        if not isinstance(self.top_k, int) or self.top_k < 0:
            return f"top_k must be an integer >= 0, got {self.top_k!r}"
        if not 0 < self.top_p <= 1:
            return f"top_p must be in (0, 1], got {self.top_p}"
        low, high = PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:  # NaN fails too
            return f"repetition_penalty must be from {low} to {high} (1: off), got {self.repetition_penalty}"
        if any(not isinstance(s, str) or not s for s in self.stop):
            return "stop strings must be non-empty strings"
        low, high = SEED_RANGE  # a seed beyond them fails the whole batch it is decoded in
        if self.seed is not None and (not isinstance(self.seed, int) or not low <= self.seed <= high):
            return f"seed must be an integer from {low} to {high}, got {self.seed!r}"
        low, high = BIAS_RANGE
        if any(not isinstance(t, int) or t < 0 or not low <= b <= high for t, b in self.logit_bias):
            return f"logit_bias must map token ids to biases from {low} to {high}"
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS):
                return f"{name} must be an integer from 0 to {MAX_LOGPROBS}, got {value!r}"
        return None

    def replace(self, **changes: object) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


class Sampler:
    """Chooses the next token of every row of a batch from its logits [B, V]."""

    def __init__(
        self,
        params: Sequence[SamplingParams],
        prompts: Sequence[Sequence[int]],
        vocab_size: int,
        device: torch.device,
    ) -> None:
        self.params = list(params)
        self.all_greedy = all(p.greedy for p in self.params)
        biased = [(row, t, b) for row, p in enumerate(self.params) for t, b in p.logit_bias]
        self.plain = self.all_greedy and not biased and all(p.repetition_penalty == 1 for p in self.params)
        column = lambda values: torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)  # noqa: E731
        self.penalty = column([p.repetition_penalty for p in self.params])
        self.temperature = column([p.temperature if not p.greedy else 1.0 for p in self.params])
        # A top_k beyond the vocabulary keeps every token (and would overflow an int64 tensor).
        self.top_k = torch.tensor(
            [min(p.top_k, vocab_size) or vocab_size for p in self.params], device=device
        )
        self.top_p = column([p.top_p for p in self.params])
        # Without top-k or top-p the cut is a full sort of the vocabulary that keeps every token: at 64
        # rows of 32,000 it cost 2.5x the sampling itself.
        self.truncates = any(p.top_k or p.top_p < 1 for p in self.params)
        self.seen: torch.Tensor | None = None
        if any(p.repetition_penalty != 1 for p in self.params):
            # Tokens of the prompt and of the output so far, as Hugging Face's penalty counts them.
            self.seen = torch.zeros(len(prompts), vocab_size, dtype=torch.bool, device=device)
            for row, ids in enumerate(prompts):
                self.seen[row, torch.tensor(list(ids), dtype=torch.long, device=device)] = True
        self.bias: tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        if any(t >= vocab_size for _, t, _ in biased):
            raise UserError(f"logit_bias names a token id beyond the vocabulary of {vocab_size}")
        if biased:  # (rows, token ids) and biases: a sparse add, not a [B, V] tensor per step
            rows, ids, values = zip(*biased, strict=True)
            index = (torch.tensor(rows, device=device), torch.tensor(ids, device=device))
            self.bias = index, torch.tensor(values, dtype=torch.float32, device=device)
        self.generators = [self._generator(p.seed, device) for p in self.params]

    @staticmethod
    def _generator(seed: int | None, device: torch.device) -> torch.Generator:
        # Unseeded requests draw their seed from torch's global RNG, so torch.manual_seed still reproduces them.
        seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        return torch.Generator(device=device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Next token ids [B] for logits [B, V] (float32)."""
        if self.plain:
            return logits.argmax(dim=-1)
        logits = logits.float()
        if self.bias is not None:  # OpenAI adds logit_bias to the logits before anything else
            logits = logits.index_put(*self.bias, accumulate=True)
        if self.seen is not None:
            penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
            logits = torch.where(self.seen, penalised, logits)
        if self.all_greedy:
            return logits.argmax(dim=-1)
        scaled = logits / self.temperature
        probs = torch.softmax(self._truncate(scaled) if self.truncates else scaled, dim=-1)
        tokens = logits.argmax(dim=-1)
        for row, p in enumerate(self.params):
            if not p.greedy:
                tokens[row] = torch.multinomial(probs[row], 1, generator=self.generators[row])[0]
        return tokens

    def _truncate(self, logits: torch.Tensor) -> torch.Tensor:
        """Top-k then top-p (nucleus, Holtzman et al., 2020): tokens outside get -inf."""
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        ranks = torch.arange(logits.shape[-1], device=logits.device)
        drop = ranks >= self.top_k.unsqueeze(1)
        sorted_logits = sorted_logits.masked_fill(drop, -math.inf)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose probability reaches top_p: drop a token once the mass before it does.
        drop |= (probs.cumsum(dim=-1) - probs) >= self.top_p
        drop[:, 0] = False
        return logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))

    def observe(self, tokens: torch.Tensor) -> None:
        """Record the tokens just chosen (for the repetition penalty)."""
        if self.seen is not None:
            self.seen[torch.arange(len(tokens), device=tokens.device), tokens] = True


def request_seed(seed: int, index: int) -> int:
    """The sampling seed of request `index` of a `generate` call whose requests carry `seed`."""
    return random.Random(f"{seed}:{index}").getrandbits(63)
