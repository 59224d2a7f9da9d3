"""Packed scoring and cached generation give what one plain forward pass per request gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llamafoundry.eval.hf_lm import HFCausalLM
from llamafoundry.eval.lm import LlamaFoundryLM, generation_batches
from llamafoundry.inference.sampling import SamplingParams


def plain_scores(model, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """log P(continuation | context) from one unpadded full forward per request (lm-eval's definition)."""
    out = []
    with torch.no_grad():
        for ctx, cont in pairs:
            whole = (ctx + cont)[-(model.cfg.max_seq_len + 1) :]
            logprobs = model(torch.tensor([whole[:-1]])).log_softmax(-1)[0, -len(cont) :]
            target = torch.tensor(cont)
            out.append(
                (
                    logprobs.gather(1, target[:, None]).sum().item(),
                    bool((logprobs.argmax(-1) == target).all()),
                )
            )
    return out


def plain_greedy(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.fixture(scope="module")
def hellaswag_requests(shared_data: Path) -> list[tuple[str, str]]:
    rows = [
        json.loads(line) for line in (shared_data / "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl").open()
    ][:8]
    requests = [(r["ctx"], " " + e) for r in rows for e in r["endings"]]
    requests += [
        ("", "An empty context is BOS."),
        ("Trailing space moves ", "to the continuation"),
        ("Question: is it?\nAnswer:", " yes"),
        ("Question: is it?\nAnswer:", " no"),
    ]
    return requests


def test_packed_loglikelihood_equals_plain_forward(tiny_model, llama_tokenizer, hellaswag_requests):
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer, batch_tokens=700)  # several batches
    encoded = lm.encode_pairs(hellaswag_requests)
    got = lm.loglikelihood(hellaswag_requests)
    want = plain_scores(tiny_model, encoded)
    assert [g for _, g in got] == [g for _, g in want]
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], abs=2e-4)


def test_encoding_follows_lm_evaluation_harness(tiny_model, llama_tokenizer):
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    (ctx, cont), (ctx_empty, cont_empty) = lm.encode_pairs([("Hello ", "world"), ("", "Hello")])
    assert ctx == llama_tokenizer.encode("Hello") and ctx + cont == llama_tokenizer.encode("Hello world")
    assert ctx_empty == [llama_tokenizer.bos_id] and cont_empty == llama_tokenizer.encode("Hello", bos=False)


def test_long_requests_are_cut_from_the_left(tiny_model, llama_tokenizer):
    """A context longer than the model's window keeps its last tokens, as lm-eval does."""
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    context = " ".join(f"word{i}" for i in range(400))  # > 512 tokens
    requests = [(context, " end one"), (context, " end two"), ("short", " one")]
    encoded = lm.encode_pairs(requests)
    assert len(encoded[0][0]) > tiny_model.cfg.max_seq_len
    got = lm.loglikelihood(requests)
    assert [lp for lp, _ in got] == pytest.approx(
        [lp for lp, _ in plain_scores(tiny_model, encoded)], abs=2e-4
    )


def test_greedy_generation_equals_step_by_step_argmax(tiny_model, llama_tokenizer):
    """Left-padded batched decoding with the KV cache gives each prompt's own greedy continuation."""
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    prompts = ["Once upon a time", "The", "def add(a, b):\n    return a + b\n\n\ndef"]
    params = SamplingParams(max_new_tokens=12)
    got = lm.generate([(p, params) for p in prompts])
    for prompt, text in zip(prompts, got, strict=True):
        ids = llama_tokenizer.encode(prompt)
        whole = llama_tokenizer.decode(ids + plain_greedy(tiny_model, ids, 12))
        assert whole == llama_tokenizer.decode(ids) + text  # the text is exactly what follows the prompt
    # Generating left the model as it was: scoring still equals plain forward passes.
    pairs = [("Once upon a time", " there"), ("The", " end")]
    assert [lp for lp, _ in lm.loglikelihood(pairs)] == pytest.approx(
        [lp for lp, _ in plain_scores(tiny_model, lm.encode_pairs(pairs))], abs=2e-4
    )


def test_generation_stops_at_stop_strings_and_is_seeded(tiny_model, llama_tokenizer):
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    free = lm.generate([("The", SamplingParams(max_new_tokens=16))])[0]
    stop = free.strip()[3:5]
    cut = lm.generate([("The", SamplingParams(max_new_tokens=16, stop=(stop,)))])[0]
    assert stop not in cut and free.startswith(cut) and len(cut) < len(free)
    sampled = [("The", SamplingParams(max_new_tokens=8, temperature=1.0, seed=s)) for s in (1, 2)]
    first = lm.generate(sampled)
    assert lm.generate(sampled) == first and first[0] != first[1]


def test_hf_adapter_scores_and_generates_like_ours(model_folders, hellaswag_requests):
    """The same weights through transformers give the same scores and greedy text (where tokenisers agree)."""
    ours = LlamaFoundryLM.from_path(model_folders["native"])
    hf = HFCausalLM(str(model_folders["hf"]), batch_size=8)
    same_tokens = [r for r in hellaswag_requests if ours.encode_pairs([r]) == hf.encode_pairs([r])]
    assert len(same_tokens) >= len(hellaswag_requests) - 4
    got, want = hf.loglikelihood(same_tokens), ours.loglikelihood(same_tokens)
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], abs=2e-4)
    prompts = [
        ("Once upon a time", SamplingParams(max_new_tokens=10)),
        ("The cat", SamplingParams(max_new_tokens=10)),
    ]
    assert hf.generate(prompts) == ours.generate(prompts)


def test_long_prompts_keep_their_end_for_generation(tiny_model, llama_tokenizer):
    """A few-shot prompt longer than the context leaves room for keeps its last tokens, as lm-eval does."""
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    prompt = " ".join(f"word{i}" for i in range(400))  # > 512 tokens
    ids = llama_tokenizer.encode(prompt)
    assert len(ids) > tiny_model.cfg.max_seq_len
    kept = ids[-(tiny_model.cfg.max_seq_len - 8) :]
    (text,) = lm.generate([(prompt, SamplingParams(max_new_tokens=8))])
    whole = llama_tokenizer.decode(kept + plain_greedy(tiny_model, kept, 8))
    assert whole == llama_tokenizer.decode(kept) + text


def test_compiled_generation_gives_the_eager_text(tiny_model, llama_tokenizer):
    """`LlamaFoundryLM(compile=True)` (`llamafoundry eval --compile`) runs the compiled decode step of the
    one generation engine and writes what eager decoding writes."""
    prompts = ["Once upon a time", "The", "def add(a, b):"]
    requests = [(p, SamplingParams(max_new_tokens=8)) for p in prompts]
    eager = LlamaFoundryLM(tiny_model, llama_tokenizer).generate(requests)
    compiled = LlamaFoundryLM(tiny_model, llama_tokenizer, compile=True)
    assert compiled.generate(requests) == eager
    assert all(g.compiled for g in compiled._generators.values())


def test_short_generation_rows_fill_the_token_budget(tiny_model, llama_tokenizer):
    """A generation batch has `max_batch` rows, or as many as `batch_tokens` holds of short rows."""
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer, max_batch=2, batch_tokens=512)
    short, long = SamplingParams(max_new_tokens=8), SamplingParams(max_new_tokens=200)
    assert lm._rows(short, 10) == 512 // 64  # 18 positions take the smallest cache, 64
    assert lm._rows(long, 100) == 2  # 300 positions: a 512-position cache, one row of budget
    requests = [("a b c", short)] * 10 + [("a", long)] * 3
    batches = list(generation_batches(requests, [3] * 10 + [1] * 3, lm._rows))
    assert [len(chunk) for _, chunk in batches] == [8, 2, 2, 1]
