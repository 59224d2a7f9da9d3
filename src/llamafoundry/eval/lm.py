"""The scoring interface every task uses, and its adapter for our models.

Sec. 3: multiple-choice tasks compare likelihoods of completions, free-form tasks generate. An `LM` offers
both: `loglikelihood([(context, continuation)]) -> [(logprob, is_greedy)]` and
`generate([(context, GenParams)]) -> [text]`.

`LlamaFoundryLM` tokenises requests as lm-evaluation-harness does (so numbers agree with it) and scores
them packed (`packing.py`: a shared context once, logits only where needed).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from llamafoundry.errors import UserError
from llamafoundry.eval.packing import loglikelihood_tokens
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer


@dataclass(frozen=True)
class GenParams:
    """How to continue a prompt: greedy when temperature is 0, else sampled; cut at the first stop string."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int = 0


class LM(abc.ABC):
    """What a task may ask of a model."""

    name: str = "lm"

    @abc.abstractmethod
    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether greedy decoding would produce the continuation."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[tuple[str, GenParams]], desc: str | None = None) -> list[str]:
        """The continuation of each context, cut before the first stop string."""


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """Move trailing spaces of the context onto the continuation (lm-evaluation-harness's rule), so a
    word and its leading space stay one token."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s]
    cuts = [c for c in cuts if c >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def decode_continuation(decode, anchor: int, generated: list[int]) -> str:
    """The text `generated` adds after a prompt ending in token `anchor`. Decoding the new tokens alone
    would drop the space SentencePiece encodes at the start of the first one (code indentation!)."""
    return decode([anchor, *generated])[len(decode([anchor])) :]


def progress(total: int, desc: str | None) -> tqdm:
    return tqdm(total=total, desc=desc, unit="req", leave=False, disable=desc is None)


def generation_batches(requests: Sequence[tuple[str, GenParams]], lengths: Sequence[int], size: int):
    """(params, request indices) batches: same parameters, similar prompt lengths (longest first)."""
    by_params: dict[GenParams, list[int]] = {}
    for i, (_, params) in enumerate(requests):
        by_params.setdefault(params, []).append(i)
    for params, indices in by_params.items():
        indices.sort(key=lambda i: -lengths[i])
        for start in range(0, len(indices), size):
            yield params, indices[start : start + size]


class TokenLM(LM):
    """Shared by adapters that see tokens: lm-evaluation-harness's encoding of (context, continuation)."""

    def __init__(self, encode_batch, prefix_id: int) -> None:
        self._encode_batch = encode_batch  # (texts, add_bos) -> list of token lists
        self.prefix_id = prefix_id  # what an empty context becomes: BOS (or EOS for models without one)

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
    """Our `Transformer` with its SentencePiece tokenizer, packed scoring and a KV-cache decoding loop."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        *,
        batch_tokens: int = 8192,
        max_batch: int = 64,
        name: str = "llamafoundry",
    ) -> None:
        super().__init__(tokenizer.encode_batch, tokenizer.bos_id)
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_len = model.cfg.max_seq_len
        self.batch_tokens, self.max_batch = batch_tokens, max_batch

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        tokenizer: str | os.PathLike | None = None,
        **kwargs,
    ) -> LlamaFoundryLM:
        """Load any model folder `load_model` knows; a tokenizer.model is needed (the folder's or `tokenizer`)."""
        from llamafoundry.checkpoint import load_model

        model, tok, _ = load_model(path, dtype=dtype, device=device)
        if tokenizer is not None:
            tok = Tokenizer(tokenizer)
        if tok is None:
            raise UserError(f"{path} has no tokenizer.model; pass --tokenizer PATH to a SentencePiece model")
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
    @torch.inference_mode()
    def generate(self, requests: Sequence[tuple[str, GenParams]], desc: str | None = None) -> list[str]:
        prompts = self._encode_batch([c for c, _ in requests], True)
        out: list[str] = [""] * len(requests)
        with progress(len(requests), desc) as bar:
            for params, chunk in generation_batches(requests, [len(p) for p in prompts], self.max_batch):
                for i, text in zip(
                    chunk, self._generate_batch([prompts[i] for i in chunk], params), strict=True
                ):
                    out[i] = text
                bar.update(len(chunk))
        return out

    def _generate_batch(self, prompts: list[list[int]], params: GenParams) -> list[str]:
        """Left-padded prefill, then one token per step from the KV cache until every row stops."""
        keep = max(1, self.max_len - params.max_new_tokens)
        prompts = [p[-keep:] for p in prompts]
        width = max(len(p) for p in prompts)
        steps = min(params.max_new_tokens, self.max_len - width)
        batch = len(prompts)
        pad = torch.tensor([width - len(p) for p in prompts], device=self.device)
        tokens = torch.zeros(batch, width, dtype=torch.long, device=self.device)
        for row, p in enumerate(prompts):
            tokens[row, width - len(p) :] = torch.tensor(p)
        cache_len = width + steps
        self.model.setup_cache(batch, cache_len)
        keys = torch.arange(cache_len, device=self.device)
        try:
            queries = torch.arange(width, device=self.device)
            mask = (keys[None, None, :] <= queries[None, :, None]) & (
                keys[None, None, :] >= pad[:, None, None]
            )
            mask |= keys[None, None, :] == queries[None, :, None]  # a pad row attends to itself, never NaN
            positions = (queries[None, :] - pad[:, None]).clamp(min=0)
            last = self.model.hidden(tokens, 0, positions=positions, mask=mask[:, None])[:, -1]
            logits = self.model.output(last)  # the vocabulary projection for the last position only
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
            generated: list[list[int]] = [[] for _ in range(batch)]
            texts, done = [""] * batch, [False] * batch
            for step in range(steps):
                nxt = _pick(logits.float(), params.temperature, generator)
                for row, token in enumerate(nxt.tolist()):
                    if done[row]:
                        continue
                    if token == self.tokenizer.eos_id:
                        done[row] = True
                        continue
                    generated[row].append(token)
                    text = decode_continuation(self.tokenizer.decode, prompts[row][-1], generated[row])
                    texts[row], done[row] = cut_at_stop(text, params.stop)
                if all(done) or step == steps - 1:
                    break
                at = width + step
                visible = (keys[None, :] <= at) & (keys[None, :] >= pad[:, None])
                logits = self.model(
                    nxt[:, None], at, positions=(at - pad)[:, None], mask=visible[:, None, None, :]
                )[:, -1]
        finally:
            self.model.clear_cache()
        return texts


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
