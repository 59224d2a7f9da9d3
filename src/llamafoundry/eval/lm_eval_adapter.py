"""lm-evaluation-harness compatibility (needs the [eval] extra).

- `LlamaFoundryHarnessLM`, lm-eval's model type "llamafoundry": `lm_eval --model llamafoundry
  --model_args pretrained=<our folder>,dtype=bfloat16 --tasks hellaswag` scores our folders (and Meta,
  HF LLaMA and llama2.c ones) with our packed scorer. `lm_eval_plugin.py` registers it.
"""

from __future__ import annotations

import lm_eval.models  # noqa: F401  (lm-eval registers its own models only if the registry is empty)
from lm_eval.api.model import LM as HarnessLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from llamafoundry.eval.lm import LlamaFoundryLM
from llamafoundry.eval.lm_eval_plugin import MODEL_NAME
from llamafoundry.inference.sampling import SamplingParams


@register_model(MODEL_NAME)
class LlamaFoundryHarnessLM(HarnessLM):
    """lm-eval's LM interface over `LlamaFoundryLM`."""

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        tokenizer: str | None = None,
        batch_tokens: int | str = 8192,
        **_: object,
    ) -> None:
        super().__init__()
        import torch

        # As lm-eval's own hf model: its CLI defaults to "cuda", which falls back to the CPU without a GPU.
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        rows = int(batch_size) if isinstance(batch_size, int) or (batch_size or "").isdigit() else 64
        self.lm = LlamaFoundryLM.from_path(
            pretrained,
            device=device,
            dtype=dtype,
            tokenizer=tokenizer,
            batch_tokens=int(batch_tokens),
            max_batch=rows,
        )

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.lm.loglikelihood(
            [r.args for r in requests], desc=None if disable_tqdm else "loglikelihood"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents, in windows of the model's context (for perplexity tasks)."""
        tok = self.lm.tokenizer
        pairs, owners = [], []
        for index, request in enumerate(requests):
            windows = get_rolling_token_windows(
                token_list=tok.encode(request.args[0], bos=False),
                prefix_token=tok.bos_id,
                max_seq_len=self.lm.max_len,
                context_len=1,
            )
            for window in map(make_disjoint_window, windows):
                pairs.append((list(window[0]), list(window[1])))
                owners.append(index)
        scores = self.lm.loglikelihood_tokens(pairs, desc=None if disable_tqdm else "loglikelihood_rolling")
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores, strict=True):
            totals[owner] += logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        batch = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or []
            sampled = kwargs.get("do_sample", False) or kwargs.get("temperature", 0.0) > 0
            params = SamplingParams(
                max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
                temperature=float(kwargs.get("temperature", 1.0)) if sampled else 0.0,
                stop=tuple(s for s in ([until] if isinstance(until, str) else until) if s),
                seed=0,  # seeded, so a rerun samples the same (each request still draws its own stream)
            )
            batch.append((context, params))
        return self.lm.generate(batch, desc=None if disable_tqdm else "generate_until")


# ---- lm-eval task configs for the local files ------------------------------------------------------------
