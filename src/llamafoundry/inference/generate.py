"""Text generation: one prefill of the prompts, then token-by-token decoding from a static KV cache.

The decode step is the gpt-fast recipe with one change: the cache is preallocated for `max_seq_len`
positions, and every tensor the step touches has a fixed shape but for the span of cache positions
attention reads, the filled part only, which is a dynamic dimension of the graph; so
`torch.compile(fullgraph=True)` turns the whole step into one graph with no Python between layers and
no allocation by us per token, and a step at position p reads p keys, not `max_seq_len`. Prompts of
different lengths are left-padded: each row gets its own rotary positions and a mask that hides its
padding, as Hugging Face does from an attention mask. The prefill projects only the last position onto
the vocabulary: the other positions' logits (vocab x dim each) are never needed.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from llamafoundry.errors import UserError
from llamafoundry.inference.detokenize import IncrementalDecoder
from llamafoundry.inference.kernels import use_decode_kernels
from llamafoundry.inference.sampling import Sampler, SamplingParams
from llamafoundry.model import KVCache, Transformer
from llamafoundry.tokenizer import Tokenizer

Prompt = str | Sequence[int]
RECOMPILE_LIMIT = 64  # compiled decode steps kept, over all generators and batch sizes
COMPILE_AFTER_STEPS = 2048  # compile="auto": decode steps after which compiling has paid for itself


def default_kv_cache_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """16 bits, as llama.cpp keeps its cache: float16 for float32 weights, else the weights' dtype."""
    return torch.float16 if weight_dtype == torch.float32 else weight_dtype


@dataclass
class Completion:
    """The result of one prompt. `finish_reason`: 'stop' (end of sequence or a stop string) or 'length'."""

    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model, and the most likely tokens' at its position (`top`:
    (id, logprob) pairs, most likely first). The first prompt token, which nothing predicts, has None."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class StepEvent:
    """What one decode step produced for one row: its token, the text it released, and whether it ended.
    With `logprobs` asked for, the token's log-probability; with `prompt_logprobs`, a row's first event
    also carries its prompt tokens'."""

    index: int
    token: int
    text: str
    finish_reason: str | None
    logprobs: TokenLogprob | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] = ()


class _Row:
    """One prompt's progress through a batch."""

    def __init__(
        self, prompt: list[int], params: SamplingParams, eos_ids: set[int], tokenizer: Tokenizer | None
    ) -> None:
        self.params = params
        self.stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else eos_ids)
        self.completion = Completion(prompt_tokens=len(prompt))
        self.decoder = IncrementalDecoder(tokenizer, prompt, params.stop) if tokenizer is not None else None

    @property
    def done(self) -> bool:
        return self.completion.finish_reason is not None

    def push(self, token: int, room_left: bool) -> str:
        """Add a sampled token; return released text; set finish_reason when the row ends."""
        out = self.completion
        if token in self.stop_ids:
            out.finish_reason = "stop"
            return self._finish_text()
        out.tokens.append(token)
        text = self.decoder.add(token) if self.decoder is not None else ""
        if self.decoder is not None and self.decoder.stopped:
            out.finish_reason = "stop"
        elif len(out.tokens) >= self.params.max_new_tokens or not room_left:
            out.finish_reason = "length"
            text += self._finish_text()
        out.text += text
        return text

    def _finish_text(self) -> str:
        text = self.decoder.flush() if self.decoder is not None else ""
        self.completion.text += text
        return text


class Generator:
    """Generates from a `Transformer` (and its tokenizer, for text prompts and stop strings).

    `max_seq_len` bounds prompt + output per row (default: the model's context).

    `compile` compiles the decode step with torch.compile: True, False, or "auto" (the default), which
    decodes eagerly until this generator has decoded COMPILE_AFTER_STEPS steps, counting the call about
    to start, and compiled from then on. A compilation costs more than a short generation gains from it
    (measured on this project's 2-core CPU, dim 512, 8 layers: 27 s cold, 4 s from inductor's on-disk
    cache; eager decoding 48 tokens/s, compiled 150), so a one-off 256-token completion stays eager and a
    long or repeated one compiles. Each batch size is a graph of its own; the length of the filled
    cache is a dynamic dimension of it. Compiling also gives the model's float linear and attention
    layers the decode kernels (same weights; see `kernels.py`).

    `compile_mode` is torch.compile's mode; on CPU, "max-autotune" also freezes the weights of a float
    model into the graph, which lets inductor use its C++ GEMM template for the products of several rows
    (batched decoding): batch-8 fp32 decoding ran 2.2x faster here, for a ~10x longer compilation (45 s
    per batch size) and a packed copy of the weights in memory; `Generator.for_serving` takes it. Steps of
    one row compile in the default mode whatever `compile_mode` says (see `_compile`). Quantized models
    are not frozen (freezing would fold their dequantization into float copies of the weights).

    `kv_cache_dtype` (default: 16 bits, as llama.cpp keeps its cache: float16 for a float32 model, else
    the model's own dtype) is how keys and values are stored: a float32 cache doubles the bytes decoding
    reads per step, for logits that differ from it by ~1e-3 of their range (tested). Attention reads only
    the filled part of the cache. `stop_ids` end every row as the tokenizer's EOS ids do (a chat
    template's end-of-turn token).

    The caller's model is left as it was: the generator works on a shallow copy of it (`self.model`), a
    module tree of its own whose parameters and buffers are the caller's tensors, not copies of them.
    The KV cache, the decode kernels' classes and eval mode live on the copy, so the same model can go
    on training or scoring; weights the caller updates in place are what the next generation uses.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        *,
        max_seq_len: int | None = None,
        compile: bool | str = "auto",
        compile_mode: str | None = None,
        kv_cache_dtype: torch.dtype | None = None,
        stop_ids: Sequence[int] = (),
    ) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.model = _shallow_copy(model).eval()
        self.kv_cache_dtype = kv_cache_dtype or default_kv_cache_dtype(model.tok_embeddings.weight.dtype)
        self.tokenizer = tokenizer
        # Every id that ends a row: the tokenizer's (Llama 3's end of text and end of turn) and `stop_ids`.
        self.eos_ids = set(stop_ids) | (set(tokenizer.eos_ids) if tokenizer is not None else set())
        self.max_seq_len = min(max_seq_len or model.cfg.max_seq_len, model.cfg.max_seq_len)
        self.device = model.tok_embeddings.weight.device
        self._caches: dict[int, list[KVCache]] = {}  # per batch size (see _setup_cache)
        self.compile_policy, self.compile_mode = compile, compile_mode
        self.compiled = False
        self.steps_decoded = 0  # decode steps run by this generator, for compile="auto"
        self._step = self._rows_step = self._decode_step  # one row; several rows
        self._freeze = False
        if compile is True:
            self._compile()

    @classmethod
    def for_serving(cls, model: Transformer, tokenizer: Tokenizer | None = None, **options) -> Generator:
        """A generator set up for a long-lived process (the server): compiled from the first request, and
        for float weights on CPU with max-autotune (frozen weights, the C++ GEMM for batched steps)."""
        quantized = any(not b.is_floating_point() for b in model.buffers())
        on_cpu = model.tok_embeddings.weight.device.type == "cpu"
        mode = "max-autotune" if on_cpu and not quantized else None
        return cls(model, tokenizer, compile=True, compile_mode=options.pop("compile_mode", mode), **options)

    def _compile(self) -> None:
        if self.compiled:
            return
        use_decode_kernels(self.model)
        self._freeze = _freezes(self.model, self.compile_mode)
        # `compile_mode` is for steps of several rows: one row decodes through the fused reductions of
        # `kernels.py`, which max-autotune's GEMM templates leave alone, and compiles faster without it.
        self._step = torch.compile(self._decode_step, fullgraph=True, dynamic=False)
        self._rows_step = torch.compile(
            self._decode_rows, fullgraph=True, dynamic=False, mode=self.compile_mode
        )
        self.compiled = True

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt (text needs the tokenizer; ids pass through, checked against the vocabulary)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise UserError(
                    "this model has no tokenizer, so text prompts cannot be encoded; "
                    "pass --tokenizer PATH to its tokenizer.model or tokenizer.json"
                )
            return self.tokenizer.encode(prompt, bos=True)
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < self.model.cfg.vocab_size]
        if bad:
            raise UserError(f"token ids {bad[:4]} are outside the vocabulary of {self.model.cfg.vocab_size}")
        return ids

    def check_prompt(self, ids: Sequence[int]) -> None:
        """A UserError if a prompt of these ids leaves no room to generate."""
        if not ids:
            raise UserError("the prompt is empty; give at least one token")
        if len(ids) >= self.max_seq_len:
            raise UserError(
                f"the prompt has {len(ids)} tokens but the context holds {self.max_seq_len} "
                f"(prompt + output); shorten the prompt"
            )

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[Completion]:
        """Complete every prompt (one batch); the results come in the order of `prompts`."""
        rows: list[_Row] = []
        for _ in self._run(prompts, params, rows):
            pass
        return [row.completion for row in rows]

    def stream(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> Iterator[list[StepEvent]]:
        """Yield, per decode step, the events of the rows still running (closing the iterator stops it)."""
        return self._run(prompts, params, [])

    def _run(
        self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams], rows: list[_Row]
    ) -> Iterator[list[StepEvent]]:
        if not prompts:
            raise UserError("no prompts given")
        ids = [self.encode(p) for p in prompts]
        for prompt in ids:
            self.check_prompt(prompt)
        params = SamplingParams() if params is None else params
        per_row = [params] * len(ids) if isinstance(params, SamplingParams) else list(params)
        if len(per_row) != len(ids):
            raise UserError(f"{len(ids)} prompts but {len(per_row)} sampling settings")
        rows.extend(_Row(p, s, self.eos_ids, self.tokenizer) for p, s in zip(ids, per_row, strict=True))
        planned = min(max(s.max_new_tokens for s in per_row), self.max_seq_len - max(map(len, ids)))
        if self.compile_policy == "auto" and self.steps_decoded + planned >= COMPILE_AFTER_STEPS:
            self._compile()
        self._setup_cache(len(ids))  # outside inference mode: the cache outlives this call
        return self._decode(ids, rows)

    @torch.inference_mode()
    def _decode(self, ids: list[list[int]], rows: list[_Row]) -> Iterator[list[StepEvent]]:
        batch, length = len(ids), max(len(p) for p in ids)
        pad = torch.tensor([length - len(p) for p in ids], device=self.device)
        tokens = torch.zeros(batch, length, dtype=torch.long, device=self.device)
        for row, prompt in enumerate(ids):
            tokens[row, length - len(prompt) :] = torch.tensor(prompt, device=self.device)
        sampler = Sampler([r.params for r in rows], ids, self.model.cfg.vocab_size, self.device)
        logits, prompt_logprobs = self._prefill(tokens, pad, [r.params.prompt_logprobs for r in rows])
        current = torch.empty(batch, 1, dtype=torch.long, device=self.device)
        pos = torch.tensor(length, device=self.device)
        keys = torch.arange(self.max_seq_len, device=self.device)
        checked = False  # whether a step of this loop has run with all of torch.compile's guards
        for position in range(length, self.max_seq_len + 1):
            next_tokens = sampler(logits)
            sampler.observe(next_tokens)
            room_left = position < self.max_seq_len  # the cache has a slot for this token
            logprobs = _logprobs(logits, next_tokens, [r.params.logprobs for r in rows])
            events = [
                StepEvent(
                    i,
                    tok,
                    row.push(tok, room_left),
                    row.completion.finish_reason,
                    logprobs[i],
                    prompt_logprobs[i],
                )
                for i, (row, tok) in enumerate(zip(rows, next_tokens.tolist(), strict=True))
                if not row.done
            ]
            prompt_logprobs = [()] * batch  # a row's first event alone carries them
            yield events
            if all(row.done for row in rows):
                return
            current.copy_(next_tokens.view(batch, 1))
            pos.fill_(position)
            logits = self._call_step(current, pos, pad, keys[: position + 1], checked)
            self.steps_decoded += 1
            checked = True

    def _call_step(
        self, current: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor, key: torch.Tensor, checked: bool
    ) -> torch.Tensor:
        """One decode step. Within a loop every step passes the same tensors, but for the span of cache
        positions `key`, whose length is a dynamic dimension of the one compiled graph; so once one step
        has passed torch.compile's guards (hundreds of checks, a sizeable part of a small model's step)
        the rest skip them."""
        if not self.compiled:  # eager: no need to import dynamo (a second's start-up) for its settings
            return self._step(current, pos, pad, key)
        rows = len(current) > 1
        step = self._rows_step if rows else self._step
        torch._dynamo.mark_dynamic(key, 0, min=2, max=self.max_seq_len)
        if not checked:
            # Compilations happen in these calls. Each batch size of each generator is a graph of its
            # own, more than dynamo's default of 8 per function in a busy server; inductor reads
            # `freezing` from its global config; and max-autotune's tables of kernel timings are for
            # inductor's developers, not for a server's log.
            quiet = {"max_autotune_report_choices_stats": False, "autotune_num_choices_displayed": 0}
            with (
                torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT),
                torch._inductor.config.patch(freezing=True, **quiet)
                if rows and self._freeze
                else nullcontext(),
            ):
                return step(current, pos, pad, key)
        with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
            return step(current, pos, pad, key)

    def reserve(self, batch: int) -> None:
        """Allocate the KV cache for up to `batch` rows now (a server's largest batch), so that every
        smaller batch shares it and none ever reallocates it."""
        if batch > max(self._caches, default=0):  # a new storage; the views of the old one go with it
            self.model.setup_cache(batch, self.max_seq_len, dtype=self.kv_cache_dtype)
            self._caches = {batch: [layer.attention.cache for layer in self.model.layers]}

    def release(self) -> None:
        """Free the KV cache; the next generation allocates it again (a frozen compiled step, which
        guards on the cache's identity, then compiles again)."""
        self._caches = {}
        self.model.clear_cache()

    def _setup_cache(self, batch: int) -> None:
        """Give the model its KV cache for `batch` rows.

        A frozen compiled step (max-autotune on CPU) guards on the identity of the cache tensors, so each
        batch size keeps its own cache objects, views of one storage sized for the largest batch so far:
        a batch size seen before reuses its compiled step instead of compiling it again.
        """
        self.reserve(batch)
        if batch not in self._caches:
            largest = max(self._caches)
            self._caches[batch] = [cache.rows(batch) for cache in self._caches[largest]]
        for layer, cache in zip(self.model.layers, self._caches[batch], strict=True):
            layer.attention.cache = cache

    def _prefill(
        self, tokens: torch.Tensor, pad: torch.Tensor, prompt_logprobs: Sequence[int | None]
    ) -> tuple[torch.Tensor, list[tuple[TokenLogprob, ...]]]:
        """Run the left-padded prompts [B, L] through the model: logits [B, V] of the last position, and
        the prompt tokens' log-probabilities for the rows that ask for them (`prompt_logprobs`: how many
        alternatives, or None)."""
        # Without padding, plain causal attention: SDPA's flash kernel, no mask to build or read.
        hidden = self._padded_hidden(tokens, pad) if pad.any() else self.model.hidden(tokens, 0)
        scored = [()] * len(tokens)
        for row, top in enumerate(prompt_logprobs):
            if top is not None:  # only the rows that ask: every position's logits are vocab x length each
                start = int(pad[row])
                logits = self.model.output(hidden[row, start:-1])
                first = TokenLogprob(int(tokens[row, start]), None)
                scored[row] = (first, *_logprobs(logits, tokens[row, start + 1 :], [top] * len(logits)))
        return self.model.output(hidden[:, -1]), scored

    def _padded_hidden(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Hidden states of left-padded prompts: each row's rotary positions start at its first real
        token, and a mask hides the padding."""
        query = torch.arange(tokens.shape[1], device=self.device)
        positions = (query - pad.unsqueeze(1)).clamp(min=0)
        visible = (query <= query.unsqueeze(1)) & (query >= pad.view(-1, 1, 1))
        # A padding query sees itself, so no softmax row is empty (NaN); real queries never see padding.
        visible |= query == query.unsqueeze(1)
        return self.model.hidden(tokens, 0, positions=positions, mask=visible.unsqueeze(1))

    def _decode_step(
        self, tokens: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        """One token per row [B, 1] at cache position `pos` (0-d), attending to the cache positions `key`
        (0 .. span - 1, the filled part); logits [B, V]. Only the span's length changes between steps."""
        visible = (key <= pos) & (key >= pad.unsqueeze(1))
        hidden = self.model.hidden(
            tokens, pos, positions=(pos - pad).unsqueeze(1), mask=visible[:, None, None, :]
        )
        return self.model.output(hidden[:, -1])

    def _decode_rows(
        self, tokens: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor, key: torch.Tensor
    ) -> torch.Tensor:
        """`_decode_step` for several rows: a function of its own, so that its graphs (compiled in
        `compile_mode`) are cached apart from those of one row."""
        return self._decode_step(tokens, pos, pad, key)


def _logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, tops: Sequence[int | None]
) -> list[TokenLogprob | None]:
    """Per row of logits [N, V]: the log-probability of `tokens[i]` and of the `tops[i]` most likely
    tokens (None: the row asked for none). These are the model's own distribution, before logit_bias,
    repetition penalty, temperature and top-k/top-p, as vLLM returns by default ("raw_logprobs")."""
    wanted = [top for top in tops if top is not None]
    if not wanted:
        return [None] * len(tops)
    logprobs = logits.float().log_softmax(dim=-1)
    picked = logprobs.gather(-1, tokens.view(-1, 1)).view(-1).tolist()
    values, ids = logprobs.topk(max(wanted), dim=-1)
    values, ids, tokens = values.tolist(), ids.tolist(), tokens.tolist()
    return [
        None
        if top is None
        else TokenLogprob(tokens[i], picked[i], tuple(zip(ids[i][:top], values[i][:top], strict=True)))
        for i, top in enumerate(tops)
    ]


def _shallow_copy(model: Transformer) -> Transformer:
    """The model's modules copied, its parameters and buffers shared (the same tensors)."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=shared)


def _freezes(model: Transformer, mode: str | None) -> bool:
    """Whether max-autotune on CPU should freeze the weights: only a float model's (see Generator)."""
    cpu = model.tok_embeddings.weight.device.type == "cpu"
    quantized = any(not b.is_floating_point() for b in model.buffers())
    return cpu and mode in ("max-autotune", "max-autotune-no-cudagraphs") and not quantized
