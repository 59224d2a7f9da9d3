"""The same scoring interface for any Hugging Face `transformers` causal LM, so our harness scores peers.

Requests are encoded exactly as lm-evaluation-harness encodes them (`TokenLM.encode_pairs`, with the
model's own tokenizer), so per-example scores can be compared with its `hf` model type. Each
(context, continuation) is one left-padded row with explicit position ids; only the last positions'
logits are computed (`logits_to_keep`), as a row's continuation always ends the row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import TokenLM, generation_batches, progress
from llamafoundry.inference.detokenize import IncrementalDecoder
from llamafoundry.inference.sampling import SamplingParams


class HFCausalLM(TokenLM):
    """`AutoModelForCausalLM` + `AutoTokenizer` from a folder or hub name."""

    def __init__(
        self,
        pretrained: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                pretrained,
                dtype=getattr(torch, dtype) if dtype else "auto",
                trust_remote_code=trust_remote_code,
            ).eval()
        except OSError as exc:
            raise UserError(
                f"cannot load Hugging Face model {pretrained!r}: {str(exc).splitlines()[0]}"
            ) from None
        if device:
            self.model.to(device)
        prefix = self.tokenizer.bos_token_id
        super().__init__(self._encode, prefix if prefix is not None else self.tokenizer.eos_token_id)
        self.name, self.batch_size = pretrained, batch_size
        self.max_len = getattr(self.model.config, "max_position_embeddings", 2048)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _encode(self, texts: Sequence[str], add_bos: bool) -> list[list[int]]:
        # lm-evaluation-harness's default for causal models: the tokenizer's own special tokens (BOS for LLaMA).
        kwargs = {} if add_bos else {"add_special_tokens": False}
        return [list(ids) for ids in self.tokenizer(list(texts), **kwargs)["input_ids"]] if texts else []

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], desc: str | None = None
    ) -> list[tuple[float, bool]]:
        rows = []
        for index, (ctx, cont) in enumerate(self.encode_pairs(requests)):
            whole = (ctx + cont)[-(self.max_len + 1) :]
            rows.append((index, whole[:-1], cont))
        rows.sort(key=lambda r: -len(r[1]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        with progress(len(requests), desc) as bar:
            for start in range(0, len(rows), self.batch_size):
                batch = rows[start : start + self.batch_size]
                for (index, _, _), value in zip(batch, self._score(batch), strict=True):
                    results[index] = value
                bar.update(len(batch))
        return results

    def _score(self, batch: list[tuple[int, list[int], list[int]]]) -> list[tuple[float, bool]]:
        width = max(len(r[1]) for r in batch)
        keep = max(len(r[2]) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        attention = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (_, fed, _) in enumerate(batch):
            ids[row, width - len(fed) :] = torch.tensor(fed)
            attention[row, width - len(fed) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        inputs = {
            "input_ids": ids.to(self.device),
            "attention_mask": attention.to(self.device),
            "position_ids": positions.to(self.device),
        }
        try:
            logits = self.model(**inputs, logits_to_keep=keep).logits
        except TypeError:  # models (or transformers < 4.50) without logits_to_keep: all positions
            logits = self.model(**inputs).logits[:, -keep:]
        logprobs = logits.float().log_softmax(-1).cpu()
        out = []
        for row, (_, _, cont) in enumerate(batch):
            lp = logprobs[row, logprobs.shape[1] - len(cont) :]
            target = torch.tensor(cont)
            out.append((lp.gather(1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())))
        return out

    @torch.inference_mode()
    def generate(self, requests: Sequence[tuple[str, SamplingParams]], desc: str | None = None) -> list[str]:
        prompts = self._encode([c for c, _ in requests], True)
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else self.tokenizer.eos_token_id
        out = [""] * len(requests)
        with progress(len(requests), desc) as bar:
            for params, chunk in generation_batches(requests, [len(p) for p in prompts], self.batch_size):
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                attention = torch.zeros(len(chunk), width, dtype=torch.long)
                for row, i in enumerate(chunk):
                    ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                    attention[row, width - len(prompts[i]) :] = 1
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                sampled = not params.greedy
                new = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=attention.to(self.device),
                    max_new_tokens=params.max_new_tokens,
                    do_sample=sampled,
                    pad_token_id=pad_id,
                    **(
                        {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
                        if sampled
                        else {}
                    ),
                )[:, width:]
                for row, i in enumerate(chunk):
                    out[i] = self._text(prompts[i], new[row].tolist(), params.stop)
                bar.update(len(chunk))
        return out

    def _text(self, prompt: list[int], generated: list[int], stop: Sequence[str]) -> str:
        """What our generator would return for these tokens: the same decoding and stop-string cut."""
        decoder = IncrementalDecoder(_SkipSpecial(self.tokenizer), prompt, stop)
        decoder.extend(generated)
        decoder.flush()
        return decoder.text


class _SkipSpecial:
    """A transformers tokenizer whose decode drops special tokens (EOS and the padding after it)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
