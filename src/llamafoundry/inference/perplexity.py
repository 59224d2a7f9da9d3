"""Perplexity of a model on a text: how quantization's quality is reported (fp32 vs int8 vs int4), and
how the CCNet filter scores documents with one of our models (`data/filters/perplexity.py`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from llamafoundry.errors import UserError
from llamafoundry.model import Transformer


@torch.inference_mode()
def negative_log_likelihood(
    model: Transformer, ids: Sequence[int], window: int | None = None, progress: bool = False
) -> tuple[float, int]:
    """(total negative log-likelihood in nats, tokens predicted) of `ids` after its first token.

    The text is scored in consecutive windows of `window` tokens (default: the model's context), each
    predicting its tokens from those before it in the same window: every token after the first is
    predicted exactly once, the usual quick protocol.
    """
    window = min(window or model.cfg.max_seq_len, model.cfg.max_seq_len)
    model.clear_cache()
    device = model.tok_embeddings.weight.device
    total, count = 0.0, 0
    starts = range(0, len(ids) - 1, window)
    for start in tqdm(starts, desc="perplexity", unit="window", disable=not progress):
        chunk = torch.tensor(list(ids[start : start + window + 1]), device=device)
        logits = model(chunk[:-1].unsqueeze(0)).float()
        total += F.cross_entropy(logits[0], chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    return total, count


def perplexity(
    model: Transformer,
    ids: Sequence[int],
    window: int | None = None,
    max_tokens: int | None = None,
    progress: bool = False,
) -> float:
    """exp(mean negative log-likelihood) of `ids` (see `negative_log_likelihood`); `max_tokens` caps how
    much of the text is scored."""
    ids = list(ids[: max_tokens + 1] if max_tokens else ids)
    if len(ids) < 2:
        raise UserError("the text is too short to score: it needs at least two tokens")
    total, count = negative_log_likelihood(model, ids, window, progress)
    return math.exp(total / count)
