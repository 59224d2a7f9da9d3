"""The scoring interface every task uses, and its adapter for our models.

Sec. 3: multiple-choice tasks compare likelihoods of completions, free-form tasks generate. An `LM` offers
both: `loglikelihood([(context, continuation)]) -> [(logprob, is_greedy)]` and
`generate([(context, SamplingParams)]) -> [text]`.

`LlamaFoundryLM` tokenises requests as lm-evaluation-harness does (so numbers agree with it), scores them
packed (`packing.py`: a shared context once, logits only where needed) and generates with the inference
`Generator` (static KV cache, optional compiled decode step), the one decoding loop of the project.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from llamafoundry.errors import UserError
from llamafoundry.eval.packing import loglikelihood_tokens
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams, request_seed
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer

if TYPE_CHECKING:
    from llamafoundry.inference.quantize import QuantConfig

MIN_SPAN = 64  # the smallest KV cache (prompt + output positions) a generation batch gets
# Decode steps one compiled graph must run to repay a cold compilation (~30 s) at the ~30 ms a compiled
# step saved at batch 64-128 (NQ below: 2 s over 64 steps); see LlamaFoundryLM.
COMPILE_STEPS = 1024


class LM(abc.ABC):
    """What a task may ask of a model."""

    name: str = "lm"

    @abc.abstractmethod
    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce the continuation."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[tuple[str, SamplingParams]], desc: str | None = None) -> list[str]:
        """The continuation of each context, cut before the first stop string."""


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing spaces of the context onto the continuation (lm-evaluation-harness's rule), so a
    word and its leading space stay one token."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def progress(total: int, desc: str | None) -> tqdm:
    return tqdm(total=total, desc=desc, unit="req", leave=False, disable=desc is None)


def generation_batches(
    requests: Sequence[tuple[str, SamplingParams]],
    lengths: Sequence[int],
    size: int | Callable[[SamplingParams, int], int],
):
    """(params, request indices) batches: same parameters, similar prompt lengths (longest first). `size`
    is the rows per batch, or a function of the parameters and the longest prompt's length."""
    by_params: dict[SamplingParams, list[int]] = {}
    for i, (_, params) in enumerate(requests):
        by_params.setdefault(params, []).append(i)
    for params, indices in by_params.items():
        indices.sort(key=lambda i: -lengths[i])
        rows = size if isinstance(size, int) else size(params, lengths[indices[0]])
        for start in range(0, len(indices), rows):
            yield params, indices[start : start + rows]


class TokenLM(LM):
    """Shared by adapters that see tokens: lm-evaluation-harness's encoding of (context, continuation)."""

    def __init__(self, encode_batch, prefix_id: int) -> None:
        self._encode_batch = encode_batch  # (texts, add_bos) -> list of token lists
        self.prefix_id = prefix_id  # what an empty context becomes: BOS (or EOS for models without one)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text encodes to (with BOS), as a prompt would."""
        return [len(ids) for ids in self._encode_batch(list(texts), True)]

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context tokens, continuation tokens) per request: the continuation is what encoding
        context + continuation adds after the context's own tokens; an empty context is the prefix token."""
        pairs = [split_pair(c, x) if c else (c, x) for c, x in requests]
        wholes = self._encode_batch([c + x for c, x in pairs], True)
        contexts = self._encode_batch([c for c, _ in pairs], True)
        bare = iter(self._encode_batch([x for c, x in pairs if not c], False))
        out = []
        for (context, _), whole, ctx in zip(pairs, wholes, contexts, strict=True):
            if context:
                out.append((ctx, whole[len(ctx) :]))
                continue
            cont = next(bare)
            # As lm-evaluation-harness: if the continuation already starts with the prefix token, use it.
            out.append((cont[:1], cont[1:]) if cont[:1] == [self.prefix_id] else ([self.prefix_id], cont))
        for (context, continuation), (_, cont) in zip(requests, out, strict=True):
            if not cont:
                raise UserError(
                    f"continuation {continuation!r} of context {context[-40:]!r} encodes to no "
                    "tokens; a task built an empty answer"
                )
        return out


class LlamaFoundryLM(TokenLM):
    """Our `Transformer` with its SentencePiece tokenizer: packed scoring, and generation by `Generator`.

    `batch_tokens` and `max_batch` bound a scoring batch (padded tokens, rows); a generation batch has
    `max_batch` rows, or more while their KV-cache positions fit in `batch_tokens` (see `_rows`).
    `compile` compiles the decode step (see `Generator`); graphs are kept per (cache span, batch size),
    at most `inference.generate.RECOMPILE_LIMIT`. By default (None) a `generate` call compiles the cache
    spans where one graph runs at least COMPILE_STEPS decode steps (counted as each batch's token
    budget), as compiling pays only there (benchmarks/eval_generation.py, bench-small model, 2-core CPU):
    a compiled batch-64 step was ~20% faster (NQ, 256 questions, 64 steps in one graph: 10 s against
    12 s; GSM8k, 32 problems at batch 32: 15 s either way), but each new (span, batch size) costs a
    compilation of ~4 s with inductor's on-disk cache warm and ~30 s cold. Long sampled runs (maj1@k,
    pass@k: thousands of steps per graph) compile; NQ and GSM8k at benchmark sizes run eager.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        *,
        batch_tokens: int = 8192,
        max_batch: int = 64,
        compile: bool | None = None,
        name: str = "llamafoundry",
    ) -> None:
        super().__init__(tokenizer.encode_batch, tokenizer.bos_id)
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_len = model.cfg.max_seq_len
        self.batch_tokens, self.max_batch, self.compile = batch_tokens, max_batch, compile
        self._generators: dict[int, Generator] = {}  # per KV-cache span (see _generator)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        tokenizer: str | os.PathLike | None = None,
        quantize: QuantConfig | str | None = None,
        **kwargs,
    ) -> LlamaFoundryLM:
        """Load any model folder `load_model` knows (its `tokenizer` and `quantize` options too); a
        tokenizer is needed (the folder's or `tokenizer`)."""
        from llamafoundry.checkpoint import load_model

        model, tok, _ = load_model(path, tokenizer=tokenizer, quantize=quantize, dtype=dtype, device=device)
        if tok is None:
            raise UserError(
                f"{path} has no tokenizer; pass --tokenizer PATH to its tokenizer.model or tokenizer.json"
            )
        return cls(model, tok, name=str(path), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    # ---- likelihoods -------------------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        return self.loglikelihood_tokens(self.encode_pairs(requests), desc)

    def loglikelihood_tokens(
        self, requests: Sequence[tuple[list[int], list[int]]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        """`loglikelihood` of (context tokens, continuation tokens) pairs, packed (see packing.py)."""
        with progress(len(requests), desc) as bar:
            return loglikelihood_tokens(
                self.model,
                requests,
                batch_tokens=self.batch_tokens,
                max_batch=self.max_batch,
                progress=bar.update,
            )

    # ---- generation --------------------------------------------------------------------------------
    def generate(self, requests: Sequence[tuple[str, SamplingParams]], desc: str | None = None) -> list[str]:
        """Each request's continuation, from the inference `Generator`.

        A prompt keeps its last `max_len - max_new_tokens` tokens (at least one), as lm-evaluation-harness
        cuts long few-shot prompts, and a row generates at most what the context leaves after its
        prompt. A seeded request samples with a seed of its own, drawn from its seed and its index in
        `requests`: k equal requests (maj1@k, pass@k) give k different samples, the same ones every run.
        """
        prompts = [
            prompt[-max(1, self.max_len - params.max_new_tokens) :]
            for prompt, (_, params) in zip(
                self._encode_batch([c for c, _ in requests], True), requests, strict=True
            )
        ]
        plan = self._plan(requests, prompts)
        compiled = self._compiled_spans(plan)
        out: list[str] = [""] * len(requests)
        try:
            with progress(len(requests), desc) as bar:
                for chunk, rows, span in plan:
                    generator = self._generator(span, self._bucket(span) in compiled)
                    completions = generator.generate([prompts[i] for i in chunk], rows)
                    for i, completion in zip(chunk, completions, strict=True):
                        out[i] = completion.text
                    bar.update(len(chunk))
        finally:
            self._release()  # scoring needs the memory more than the next generation needs a warm cache
        return out

    def _plan(
        self, requests: Sequence[tuple[str, SamplingParams]], prompts: list[list[int]]
    ) -> list[tuple[list[int], list[SamplingParams], int]]:
        """(request indices, their row parameters, positions they span) per generation batch."""
        plan = []
        for params, chunk in generation_batches(requests, [len(p) for p in prompts], self._rows):
            rows = [self._row_params(params, len(prompts[i]), i) for i in chunk]
            span = max(len(prompts[i]) + r.max_new_tokens for i, r in zip(chunk, rows, strict=True))
            plan.append((chunk, rows, span))
        return plan

    def _compiled_spans(self, plan: list[tuple[list[int], list[SamplingParams], int]]) -> set[int]:
        """The cache buckets whose decode step runs compiled: all or none when `compile` says so, else
        those where one (bucket, batch size) graph has at least COMPILE_STEPS steps to run."""
        buckets = {self._bucket(span) for _, _, span in plan}
        if self.compile is not None:
            return buckets if self.compile else set()
        steps: dict[tuple[int, int], int] = {}
        for chunk, rows, span in plan:
            graph = (self._bucket(span), len(chunk))
            steps[graph] = steps.get(graph, 0) + max(r.max_new_tokens for r in rows)
        return {bucket for (bucket, _), n in steps.items() if n >= COMPILE_STEPS}

    def _row_params(self, params: SamplingParams, prompt_len: int, index: int) -> SamplingParams:
        seed = None if params.seed is None else request_seed(params.seed, index)
        return params.replace(max_new_tokens=min(params.max_new_tokens, self.max_len - prompt_len), seed=seed)

    def _rows(self, params: SamplingParams, longest: int) -> int:
        """Rows per generation batch: `max_batch`, or as many as `batch_tokens` holds when the rows are
        short. Short rows leave the weight products too few rows to run efficiently: NQ (64-position
        rows) ran 13% faster in batches of 128 than of 64 (benchmarks/eval_generation.py)."""
        span = self._bucket(min(self.max_len, longest + params.max_new_tokens))
        return max(self.max_batch, self.batch_tokens // span)

    def _bucket(self, span: int) -> int:
        """The KV-cache length for rows of `span` positions: a power of two from MIN_SPAN to the context."""
        return min(self.max_len, max(MIN_SPAN, 1 << (span - 1).bit_length()))

    def _generator(self, span: int, compile: bool) -> Generator:
        """The generator whose cache spans the bucket of `span` positions (prompt + output), compiled or
        not; the others free their caches, so one cache at a time takes memory.

        Attention spans the whole static cache, so a cache as long as the context is wasted on short
        rows: NQ (rows of ~64 positions, benchmarks/eval_generation.py) took 1.4x as long with a
        512-position cache as with a 64-position one. Buckets are powers of two from MIN_SPAN to the
        model's context, so a compiled step has a graph per (bucket, batch size), not per prompt length.
        """
        bucket = self._bucket(span)
        self._release(keep=bucket)
        if bucket not in self._generators or self._generators[bucket].compiled != compile:
            # The cache in the weights' dtype: scores a paper table prints stay those of exact
            # decoding (and lm-eval's), not of decoding's 16-bit default.
            self._generators[bucket] = Generator(
                self.model,
                self.tokenizer,
                max_seq_len=bucket,
                compile=compile,
                kv_cache_dtype=self.model.tok_embeddings.weight.dtype,
            )
        return self._generators[bucket]

    def _release(self, keep: int | None = None) -> None:
        for bucket, generator in self._generators.items():
            if bucket != keep:
                generator.release()
