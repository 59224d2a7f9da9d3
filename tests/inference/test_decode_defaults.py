"""The fast decoding defaults: a 16-bit KV cache, attention over the filled part of the cache only, and
compilation once it pays for itself; greedy tokens stay fp32's (or part only at a measured near-tie)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from llamafoundry.config import ModelConfig
from llamafoundry.inference import generate
from llamafoundry.inference.agreement import greedy_divergence
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.quantize import QuantConfig, quantize_model
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.model import KVCache, Transformer

PROMPT = [1, 403, 407, 261, 378, 300, 89]


def test_the_kv_cache_is_16_bit_by_default(stories):
    generator = Generator(stories)
    generator.generate([PROMPT], SamplingParams(max_new_tokens=2))
    assert generator.model.layers[0].attention.cache.k.dtype == torch.float16
    assert Generator(stories.to(torch.bfloat16)).kv_cache_dtype == torch.bfloat16  # 16 bits already
    assert Generator(stories, kv_cache_dtype=torch.float32).kv_cache_dtype == torch.float32


@pytest.mark.slow
def test_default_greedy_tokens_equal_fp32s_on_stories260k(stories):
    """256 tokens from the trained model: the default (16-bit cache) and exact fp32 decode alike."""
    divergence = greedy_divergence(stories, PROMPT, 256)
    assert divergence.step is None, divergence.describe()
    assert 0 < divergence.error < 0.05


@pytest.mark.slow
def test_default_greedy_tokens_on_a_random_bench_model_part_only_at_a_near_tie():
    """The decode benchmark's shape (dim 512, 8 layers, vocab 32000), randomly initialised: its logits are
    nearly flat, so rounding may flip a near-tie; any divergence must be one."""
    cfg = ModelConfig(dim=512, n_layers=8, n_heads=8, vocab_size=32000, multiple_of=256, max_seq_len=512)
    torch.manual_seed(0)
    divergence = greedy_divergence(Transformer(cfg).eval(), PROMPT, 256)
    assert divergence.at_near_tie, divergence.describe()


def test_the_kv_cache_hands_attention_its_filled_part():
    cache = KVCache(2, 16, 1, 4, torch.float32)
    k, v = torch.ones(2, 1, 3, 4), torch.full((2, 1, 3, 4), 2.0)
    keys, values = cache.update(torch.arange(3), k, v, span=5)
    assert keys.shape == values.shape == (2, 1, 5, 4)
    assert keys.data_ptr() == cache.k.data_ptr()  # a view, no copy
    assert keys[:, :, :3].eq(1).all() and values[:, :, 3:].eq(0).all()


def test_one_compiled_graph_serves_every_length_of_the_filled_cache(stories):
    """The span attention reads grows every step; it is a dynamic dimension, so one graph serves all of
    it, up to the last slot of the context, and decodes as eager decoding does."""
    compiled = Generator(stories, compile=True, max_seq_len=48)
    eager = Generator(stories, compile=False, max_seq_len=48)
    params = SamplingParams(max_new_tokens=100, ignore_eos=True)  # runs to the end of the context
    compiled.generate([PROMPT], SamplingParams(max_new_tokens=3, ignore_eos=True))
    graphs = counters["stats"]["unique_graphs"]
    ours = compiled.generate([PROMPT], params)[0]
    assert counters["stats"]["unique_graphs"] == graphs
    assert ours.tokens == eager.generate([PROMPT], params)[0].tokens
    assert len(PROMPT) + len(ours.tokens) == 49


def test_auto_compiles_once_the_decoded_steps_pay_for_it(stories, monkeypatch):
    monkeypatch.setattr(generate, "COMPILE_AFTER_STEPS", 40)
    generator = Generator(stories)  # compile="auto"
    generator.generate([PROMPT], SamplingParams(max_new_tokens=20, ignore_eos=True))
    assert not generator.compiled and generator.steps_decoded == 19
    out = generator.generate([PROMPT], SamplingParams(max_new_tokens=30, ignore_eos=True))[0]
    assert generator.compiled  # 19 decoded + 29 planned >= 40
    assert (
        out.tokens
        == Generator(stories, compile=False).generate([PROMPT], SamplingParams(30, ignore_eos=True))[0].tokens
    )
    long = Generator(stories)
    long.generate([PROMPT], SamplingParams(max_new_tokens=60, ignore_eos=True))
    assert long.compiled  # one long generation compiles from its start


def test_serving_compiles_float_weights_with_max_autotune_and_quantized_ones_plainly(stories):
    assert Generator.for_serving(stories).compile_mode == "max-autotune"
    int8 = quantize_model(stories, QuantConfig("int8"))
    assert Generator.for_serving(int8).compile_mode is None
    assert Generator.for_serving(int8).compiled


def test_a_prefill_attends_over_its_own_keys_not_the_16_bit_copies(stories):
    """The prompt's logits (and so prompt log-probabilities, echo scoring, the first token) are exact
    under the 16-bit cache: only decode steps read rounded keys and values."""
    params = SamplingParams(max_new_tokens=1, prompt_logprobs=0)
    event = next(iter(Generator(stories).stream([PROMPT], params)))[0]
    with torch.no_grad():
        exact = stories(torch.tensor([PROMPT]))[0].log_softmax(-1)
    expected = exact[:-1].gather(-1, torch.tensor(PROMPT[1:])[:, None]).squeeze(-1)
    ours = torch.tensor([t.logprob for t in event.prompt_logprobs[1:]])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
