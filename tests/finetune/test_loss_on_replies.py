"""The loss is on the reply tokens only (Sec. 4), padding changes nothing, and the prompts are the ones
serving renders."""

import math

import pytest
import torch
import torch.nn.functional as F

from llamafoundry.checkpoint import load_model
from llamafoundry.finetune.batches import fit_examples, pad_rows
from llamafoundry.finetune.data import Conversation
from llamafoundry.finetune.template import LLAMA2_TEMPLATE, Example, examples_of
from llamafoundry.inference.chat import ChatTemplate, render_chat
from llamafoundry.train.loss import IGNORE_INDEX, lm_loss, loss_weights

EXAMPLES = [  # (tokens, prompt length): the prompt takes no loss
    Example([1, 5, 6, 7, 8, 9, 2], 3),
    Example([1, 10, 11, 12, 2], 4),
    Example([1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 2], 2),  # longer than the row: cut
]
SEQ_LEN = 8


def hand_loss(model, examples, seq_len) -> tuple[float, int]:
    """Sum of -log p(reply token | everything before it), each example run alone and unpadded, and the
    number of reply tokens."""
    total, count = 0.0, 0
    for example in examples:
        tokens = torch.tensor([example.tokens[: seq_len + 1]])
        logprobs = F.log_softmax(model(tokens[:, :-1]).double(), dim=-1)[0]
        for position in range(example.prompt_len, tokens.shape[1]):
            total -= logprobs[position - 1, tokens[0, position]].item()
            count += 1
    return total, count


def test_rows_mask_prompt_and_padding():
    rows = pad_rows(EXAMPLES, SEQ_LEN, pad_id=2)
    assert rows.shape == (3, 2, SEQ_LEN + 1)
    assert rows[0, 0].tolist() == [1, 5, 6, 7, 8, 9, 2, 2, 2]
    assert rows[0, 1].tolist() == [IGNORE_INDEX] * 3 + [7, 8, 9, 2] + [IGNORE_INDEX] * 2
    assert rows[1, 1].tolist() == [IGNORE_INDEX] * 4 + [2] + [IGNORE_INDEX] * 4
    assert rows[2, 0].tolist() == list(range(1, 2)) + list(range(20, 28))
    assert rows[2, 1].tolist() == [IGNORE_INDEX] * 2 + list(range(21, 28))


def test_batch_loss_equals_a_hand_computation_over_reply_tokens(base_model):
    model, _, _ = load_model(base_model)
    with torch.no_grad():
        loss = lm_loss(model, pad_rows(EXAMPLES, SEQ_LEN, pad_id=2)).item()
        total, count = hand_loss(model, EXAMPLES, SEQ_LEN)
    assert count == 4 + 1 + 7
    assert math.isclose(loss, total / count, rel_tol=1e-5)


def test_padding_leaves_the_real_positions_unchanged(base_model):
    model, _, _ = load_model(base_model)
    example = EXAMPLES[1]
    with torch.no_grad():
        alone = model(torch.tensor([example.tokens]))
        for pad_id in (0, 2, 300):
            padded = model(pad_rows([example], 16, pad_id)[:, 0])
            torch.testing.assert_close(padded[:, : len(example.tokens)], alone, rtol=1e-5, atol=1e-5)


def test_a_steps_loss_weighs_micro_batches_by_their_reply_tokens(base_model):
    """Micro-batches of 2 and 11 reply tokens: the step's loss is the mean over all 13, not the mean of
    the two micro-batches' means."""
    model, _, _ = load_model(base_model)
    step = torch.stack(
        [pad_rows([EXAMPLES[1], EXAMPLES[1]], SEQ_LEN, 2), pad_rows(EXAMPLES[::2], SEQ_LEN, 2)]
    )
    with torch.no_grad():
        weights = loss_weights(step)
        weighted = sum(w * lm_loss(model, micro) for w, micro in zip(weights, step, strict=True)).item()
        total, count = hand_loss(model, [EXAMPLES[1], EXAMPLES[1], EXAMPLES[0], EXAMPLES[2]], SEQ_LEN)
    assert weights.tolist() == pytest.approx([2 / 13, 11 / 13])
    assert math.isclose(weighted, total / count, rel_tol=1e-5)


def test_windows_of_pretraining_weigh_micro_batches_equally():
    assert loss_weights(torch.zeros(4, 2, 9, dtype=torch.int64)).tolist() == [0.25] * 4


def test_examples_start_with_the_prompt_serving_renders(base_model):
    _, tokenizer, _ = load_model(base_model)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Green."},
    ]
    for template in (ChatTemplate(jinja=LLAMA2_TEMPLATE, stop=()), ChatTemplate()):
        first, second = examples_of([Conversation(messages, "test")], template, tokenizer)
        for example, turn in ((first, 2), (second, 4)):
            prompt = render_chat(messages[:turn], template, tokenizer)
            assert example.tokens[: example.prompt_len] == prompt
            reply = example.tokens[example.prompt_len :]
            assert reply[-1] == tokenizer.eos_id
            assert tokenizer.decode(reply[:-1]).strip() == messages[turn]["content"]


def test_examples_whose_prompt_fills_the_row_are_dropped():
    kept, dropped = fit_examples(EXAMPLES, 3)
    assert dropped == 1 and [e.prompt_len for e in kept] == [3, 2]
    assert all(len(e.tokens) <= 4 for e in kept)
