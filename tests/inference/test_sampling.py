"""Sampling: our logits processors against Hugging Face's, seeds, stop strings, streaming."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llamafoundry.errors import UserError
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import Sampler, SamplingParams


def test_processors_match_hugging_face_in_its_order():
    torch.manual_seed(0)
    vocab, history = 50, [[3, 3, 7, 9], [1, 2]]
    logits = torch.randn(2, vocab) * 3
    params = [
        SamplingParams(temperature=0.7, top_k=10, top_p=0.8, repetition_penalty=1.3),
        SamplingParams(temperature=1.5, top_k=0, top_p=0.5, repetition_penalty=1.0),
    ]
    sampler = Sampler(params, history, vocab, torch.device("cpu"))
    ours = torch.softmax(sampler._truncate(_penalised(sampler, logits) / sampler.temperature), dim=-1)
    for row, p in enumerate(params):
        ids = torch.tensor([history[row]])
        x = logits[row : row + 1]
        x = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(ids, x)
        x = TemperatureLogitsWarper(p.temperature)(ids, x)
        if p.top_k:
            x = TopKLogitsWarper(p.top_k)(ids, x)
        x = TopPLogitsWarper(p.top_p)(ids, x)
        torch.testing.assert_close(ours[row], torch.softmax(x, dim=-1)[0])


def _penalised(sampler: Sampler, logits: torch.Tensor) -> torch.Tensor:
    penalised = torch.where(logits < 0, logits * sampler.penalty, logits / sampler.penalty)
    return torch.where(sampler.seen, penalised, logits)


def test_top_k_one_and_tiny_top_p_are_greedy(stories):
    generator = Generator(stories)
    prompt = [[1, 403, 407, 261]]
    greedy = generator.generate(prompt, SamplingParams(max_new_tokens=20, ignore_eos=True))[0].tokens
    for params in (
        SamplingParams(max_new_tokens=20, temperature=1.0, top_k=1, ignore_eos=True, seed=3),
        SamplingParams(max_new_tokens=20, temperature=1.0, top_p=1e-6, ignore_eos=True, seed=3),
    ):
        assert generator.generate(prompt, params)[0].tokens == greedy


def test_a_seed_reproduces_its_sample_whatever_shares_the_batch(stories):
    generator = Generator(stories)
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=1234, ignore_eos=True)
    alone = generator.generate([[1, 300, 301]], params)[0].tokens
    again = generator.generate([[1, 300, 301]], params)[0].tokens
    other_seed = generator.generate(
        [[1, 300, 301]], SamplingParams(max_new_tokens=30, temperature=1.0, seed=99, ignore_eos=True)
    )[0].tokens
    batched = generator.generate(
        [[1, 300, 301], [1, 5, 6, 7, 8]], [params, SamplingParams(max_new_tokens=10, temperature=0.9, seed=5)]
    )[0].tokens
    assert alone == again == batched
    assert alone != other_seed


def test_repetition_penalty_reduces_repeats(stories):
    generator = Generator(stories)
    prompt = [[1, 20, 30, 40, 50]]  # greedy decoding of this prompt repeats one token over and over
    plain = generator.generate(prompt, SamplingParams(max_new_tokens=30, ignore_eos=True))[0].tokens
    penalised = generator.generate(
        prompt, SamplingParams(max_new_tokens=30, ignore_eos=True, repetition_penalty=1.5)
    )[0].tokens
    assert len(set(penalised)) > len(set(plain))


def test_stop_string_ends_generation_before_it(stories, tok512):
    generator = Generator(stories, tok512)
    prompt = "Once upon a time"
    free = generator.generate([prompt], SamplingParams(max_new_tokens=60, ignore_eos=True))[0]
    stop = free.text[10:13]  # a string the greedy output is known to contain
    cut = generator.generate([prompt], SamplingParams(max_new_tokens=60, ignore_eos=True, stop=(stop,)))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]
    assert stop not in cut.text


def test_stream_text_adds_up_to_the_completion(stories, tok512):
    generator = Generator(stories, tok512)
    prompts = ["The king said", "Hi"]
    params = SamplingParams(max_new_tokens=50, temperature=0.9, seed=7, stop=("the",))
    done = generator.generate(prompts, params)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    reasons: dict[int, str] = {}
    for events in generator.stream(prompts, params):
        for event in events:
            pieces[event.index].append(event.text)
            if event.finish_reason:
                reasons[event.index] = event.finish_reason
    assert ["".join(pieces[i]) for i in (0, 1)] == [c.text for c in done]
    assert [reasons[i] for i in (0, 1)] == [c.finish_reason for c in done]
    # This seed's first row says "the": its text ends just before it, the token that completed it ends
    # the row. The same seeds without the stop string draw the same tokens and run on past it.
    free = generator.generate(prompts, params.replace(stop=()))
    assert [c.finish_reason for c in done] == ["stop", "length"]
    assert "the" in free[0].text and done[0].text == free[0].text[: free[0].text.index("the")]
    assert done[0].tokens == free[0].tokens[: len(done[0].tokens)] and len(done[0].tokens) < 50
    assert "the" not in done[1].text and done[1] == free[1]
    # The text is the prompt's continuation, as the tokenizer would decode prompt + output.
    full = [tok512.decode(tok512.encode(p)[1:] + c.tokens) for p, c in zip(prompts, done, strict=True)]
    assert full[0].startswith(prompts[0] + done[0].text + "the")
    assert full[1] == prompts[1] + done[1].text


def test_a_stop_token_ends_its_row_only(stories):
    generator = Generator(stories)
    params = SamplingParams(max_new_tokens=120, temperature=1.0, seed=2)
    endless = generator.generate([[1], [1, 403]], params)[0].tokens
    assert 1 in endless  # llama2.c's stories end with BOS (id 1); this seed's story ends within 120 tokens
    out = generator.generate([[1], [1, 403]], [params.replace(stop_token_ids=(1,)), params])
    assert out[0].finish_reason == "stop"
    assert out[0].tokens == endless[: endless.index(1)]  # the stop token itself is not part of the output
    assert out[1].finish_reason == "length" and len(out[1].tokens) == 120  # the other row kept going


def test_end_of_sequence_is_a_stop_token_unless_ignored(stories, tok512):
    generator = Generator(stories, tok512)
    params = SamplingParams(max_new_tokens=60, temperature=4.0, seed=3)  # hot enough to draw EOS (id 2)
    free = generator.generate([[1]], params.replace(ignore_eos=True))[0]
    assert tok512.eos_id in free.tokens and free.finish_reason == "length"
    out = generator.generate([[1]], params)[0]
    assert out.finish_reason == "stop"
    assert out.tokens == free.tokens[: free.tokens.index(tok512.eos_id)]


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-2),
        dict(max_new_tokens=0),
        dict(repetition_penalty=0),
        dict(stop=("",)),
    ],
)
def test_bad_sampling_settings_are_user_errors(bad):
    with pytest.raises(UserError, match="invalid sampling parameters"):
        SamplingParams(**bad)


def test_bad_prompts_are_user_errors(stories):
    generator = Generator(stories, max_seq_len=16)
    with pytest.raises(UserError, match="no tokenizer"):
        generator.generate(["text needs a tokenizer"])
    with pytest.raises(UserError, match="shorten the prompt"):
        generator.generate([list(range(1, 20))])
    with pytest.raises(UserError, match="outside the vocabulary"):
        generator.generate([[1, 600]])
    with pytest.raises(UserError, match="empty"):
        generator.generate([[]])


def test_sampling_without_a_cut_skips_the_sort_and_draws_the_same_tokens():
    torch.manual_seed(0)
    params = [SamplingParams(temperature=t, seed=i) for i, t in enumerate([0.6, 0.8, 1.0, 1.5])]
    skipping = Sampler(params, [[1]] * 4, 2000, torch.device("cpu"))
    cutting = Sampler(params, [[1]] * 4, 2000, torch.device("cpu"))
    assert not skipping.truncates
    cutting.truncates = True  # top_k = vocabulary, top_p = 1: the cut keeps everything
    for step in range(100):
        logits = torch.randn(4, 2000) * (1 + step % 5)
        assert torch.equal(skipping(logits), cutting(logits))
