"""`LlamaFoundryLM.generate` compiles the decode step by default only where a graph runs long enough."""

from __future__ import annotations

from llamafoundry.eval.lm import COMPILE_STEPS, LlamaFoundryLM
from llamafoundry.inference.sampling import SamplingParams


def compiled_spans(lm: LlamaFoundryLM, requests: list[tuple[str, SamplingParams]]) -> set[int]:
    prompts = lm._encode_batch([c for c, _ in requests], True)
    return lm._compiled_spans(lm._plan(requests, prompts))


def test_long_sampled_runs_compile_and_short_ones_do_not(tiny_model, llama_tokenizer):
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer, max_batch=8, batch_tokens=512)
    sampled = SamplingParams(max_new_tokens=200, temperature=1.0, seed=0)
    qa = SamplingParams(max_new_tokens=32, stop=("\n",))
    # 8 batches of 8 rows, 200 steps each: 1,600 steps in the (256-position, 8 rows) graph
    assert COMPILE_STEPS <= 8 * 200
    assert compiled_spans(lm, [("Q: 2 + 2?", sampled)] * 64) == {256}
    assert compiled_spans(lm, [("Q: 2 + 2?", qa)] * 64) == set()  # 8 x 32 steps: eager
    assert compiled_spans(lm, [("Q: 2 + 2?", sampled)] * 8) == set()  # one batch of 200 steps


def test_the_compile_option_overrides_the_step_count(tiny_model, llama_tokenizer):
    requests = [("Q: 2 + 2?", SamplingParams(max_new_tokens=32))] * 4
    assert compiled_spans(LlamaFoundryLM(tiny_model, llama_tokenizer, compile=True), requests) == {64}
    long = [("Q: 2 + 2?", SamplingParams(max_new_tokens=200, temperature=1.0, seed=0))] * 64
    assert (
        compiled_spans(
            LlamaFoundryLM(tiny_model, llama_tokenizer, max_batch=8, batch_tokens=512, compile=False), long
        )
        == set()
    )


def test_a_short_default_run_decodes_eagerly(tiny_model, llama_tokenizer):
    lm = LlamaFoundryLM(tiny_model, llama_tokenizer)
    lm.generate([("The", SamplingParams(max_new_tokens=4))])
    assert lm._generators and not any(g.compiled for g in lm._generators.values())
