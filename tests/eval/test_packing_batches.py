"""Packed scoring's batches: little padding, and the vocabulary normalisation in place equals log_softmax."""

from __future__ import annotations

import pytest
import torch

from llamafoundry.eval.packing import PAD_SLACK, _batches, _Pack, _token_scores


def pack(length: int) -> _Pack:
    return _Pack([0] * length, list(range(length)), [0] * length, [])


def test_batches_pad_no_row_by_more_than_the_slack():
    """Sorted packs of slowly falling lengths (HellaSwag's: 284 down to ~60 tokens) would fill a batch of
    `max_batch` rows padded to its first row's width; each row must stay within PAD_SLACK of it."""
    packs = [pack(n) for n in range(200, 50, -1)]
    batches = list(_batches(packs, batch_tokens=8192, max_batch=64))
    assert [p for b in batches for p in b] == packs  # every pack once, in order
    for batch in batches:
        width = len(batch[0].tokens)
        assert len(batch) * width <= 8192 and len(batch) <= 64
        assert min(len(p.tokens) for p in batch) >= (1 - PAD_SLACK) * width
    padded = sum(len(b) * len(b[0].tokens) for b in batches)
    assert padded <= (1 + PAD_SLACK) * sum(len(p.tokens) for p in packs)


@pytest.mark.parametrize("chunk", [3, 256])
def test_token_scores_equal_log_softmax_and_argmax(chunk):
    """Rows across chunk boundaries, repeated rows (continuations sharing a predicting row), and a target
    that is the argmax."""
    torch.manual_seed(0)
    output = torch.nn.Linear(16, 1000, bias=False)
    hidden = torch.randn(7, 16)
    rows = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 6])
    targets = torch.randint(0, 1000, (9,))
    want = output(hidden).log_softmax(-1)
    targets[2] = want[1].argmax()
    logprobs, greedy = _token_scores(output, hidden, rows, targets, chunk=chunk)
    assert logprobs.tolist() == pytest.approx(want[rows, targets].tolist(), abs=1e-5)
    assert greedy.tolist() == (want[rows].argmax(-1) == targets).tolist()
    assert greedy[2]
