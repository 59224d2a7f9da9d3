"""Our generator against Hugging Face `generate` (same weights, greedy), and cached decoding against
the full-sequence forward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from llamafoundry.checkpoint import load_model
from llamafoundry.checkpoint.hf import hf_config, to_hf
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.model import Transformer


def hf_twin(model: Transformer) -> LlamaForCausalLM:
    cfg = model.cfg
    hf = LlamaForCausalLM(LlamaConfig(**hf_config(cfg, torch.float32, None)))
    hf.load_state_dict(to_hf(model.state_dict(), cfg), strict=True)
    return hf.eval()


def hf_greedy(hf: LlamaForCausalLM, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """HF greedy continuation of a left-padded batch (positions come from the attention mask)."""
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[:, length:].tolist()


PROMPTS = [[1, 403, 407, 261, 378, 300, 89], [1, 300], [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]]


def test_greedy_batch_of_one_matches_hf(stories):
    hf = hf_twin(stories)
    ours = Generator(stories).generate([PROMPTS[0]], SamplingParams(max_new_tokens=40, ignore_eos=True))
    assert ours[0].tokens == hf_greedy(hf, [PROMPTS[0]], 40)[0]
    assert ours[0].finish_reason == "length"


def test_greedy_left_padded_batch_matches_hf(stories):
    hf = hf_twin(stories)
    ours = Generator(stories).generate(PROMPTS, SamplingParams(max_new_tokens=40, ignore_eos=True))
    expected = hf_greedy(hf, PROMPTS, 40)
    assert [c.tokens for c in ours] == expected
    # Each row also equals that prompt decoded alone: padding changes nothing.
    alone = [
        Generator(stories).generate([p], SamplingParams(max_new_tokens=40, ignore_eos=True))[0].tokens
        for p in PROMPTS
    ]
    assert alone == expected


def test_multi_head_model_with_text_prompts_matches_hf(meta_tokenizer, random_model):
    model = random_model(n_kv_heads=None)
    prompts = ["The capital of France is", "Hello", "In 1905, Albert Einstein published four papers"]
    ours = Generator(model, meta_tokenizer).generate(
        prompts, SamplingParams(max_new_tokens=24, ignore_eos=True)
    )
    ids = [meta_tokenizer.encode(p) for p in prompts]
    assert [c.tokens for c in ours] == hf_greedy(hf_twin(model), ids, 24)
    assert [c.prompt_tokens for c in ours] == [len(i) for i in ids]


def _cached_logits(
    generator: Generator, prompts: list[list[int]], continuation: list[list[int]]
) -> torch.Tensor:
    """Logits [B, steps + 1, V]: the prefill's, then one decode step per continuation token."""
    batch, length = len(prompts), max(len(p) for p in prompts)
    generator._setup_cache(batch)
    pad = torch.tensor([length - len(p) for p in prompts])
    tokens = torch.tensor([[0] * (length - len(p)) + p for p in prompts])
    out = [generator._prefill(tokens, pad, [None] * batch)[0]]
    keys = torch.arange(generator.max_seq_len)
    for step in range(len(continuation[0])):
        current = torch.tensor([[c[step]] for c in continuation])
        span = keys[: length + step + 1]  # the filled part of the cache
        out.append(generator._call_step(current, torch.tensor(length + step), pad, span, checked=False))
    return torch.stack(out, dim=1)


@torch.no_grad()
def test_cached_decode_logits_equal_full_sequence_logits(stories):
    continuation = [[5 + i, 77, 300, 2, 9, 120, 44, 8] for i in range(len(PROMPTS))]
    cached = _cached_logits(Generator(stories, kv_cache_dtype=torch.float32), PROMPTS, continuation)
    stories.clear_cache()
    for row, (prompt, cont) in enumerate(zip(PROMPTS, continuation, strict=True)):
        full = stories(torch.tensor([prompt + cont]))[0, len(prompt) - 1 :]
        torch.testing.assert_close(cached[row], full, atol=1e-4, rtol=0)


@pytest.mark.slow
@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_kv_cache_stays_close_to_float32(stories, dtype):
    prompts, continuation = PROMPTS[:2], [[7, 8, 9, 10], [11, 12, 13, 14]]
    exact = _cached_logits(
        Generator(copy.deepcopy(stories), kv_cache_dtype=torch.float32), prompts, continuation
    )
    half = Generator(copy.deepcopy(stories), kv_cache_dtype=dtype)
    eager = _cached_logits(half, prompts, continuation)
    assert half.model.layers[0].attention.cache.k.dtype == dtype
    compiled = _cached_logits(
        Generator(half.model, compile=True, kv_cache_dtype=dtype), prompts, continuation
    )
    # The same 16-bit cache, sums in another order: 5.6e-4 apart at most here (logits span ~10).
    torch.testing.assert_close(compiled, eager, atol=1e-3, rtol=0)
    error = (eager - exact).abs().max().item()
    # Rounded keys and values and no more: fp16 keeps 11 significant bits, bf16 8 (logits span ~10 here).
    assert 0 < error < (0.1 if dtype == torch.float16 else 0.5)
    assert exact.abs().max() > 5


@pytest.fixture(scope="module", params=[None, "max-autotune"])
def compiled(request: pytest.FixtureRequest, stories_path) -> Generator:
    """A compiled generator on stories260K with a float32 KV cache (compiled and eager arithmetic are
    compared, not two roundings of the cache) and room for 3 rows, shared by the tests of one mode:
    with a cold inductor cache one batch size took 20-60 s to compile on 2 cores, so each is compiled
    once. max-autotune on CPU freezes the weights into the graph and picks inductor's C++ GEMM template."""
    model, _, _ = load_model(stories_path)
    generator = Generator(model, compile=True, compile_mode=request.param, kv_cache_dtype=torch.float32)
    generator.reserve(3)  # before the first step: a frozen graph guards on the cache's identity
    return generator


def test_compiled_decode_step_equals_eager(stories, compiled):
    prompts, continuation = PROMPTS[:2], [[7, 8, 9, 10], [11, 12, 13, 14]]
    eager = Generator(stories, kv_cache_dtype=torch.float32)
    expected = _cached_logits(eager, prompts, continuation)
    torch.testing.assert_close(_cached_logits(compiled, prompts, continuation), expected, atol=1e-4, rtol=0)
    params = SamplingParams(max_new_tokens=30, ignore_eos=True)
    assert compiled.generate(prompts, params)[0].tokens == eager.generate(prompts, params)[0].tokens


def test_each_batch_size_compiles_once(stories, compiled):
    """Going back to a batch size seen before reuses its compiled step (its KV cache keeps its identity,
    which a frozen graph guards on), and every batch decodes as eager decoding does."""
    eager = Generator(stories, kv_cache_dtype=torch.float32)
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)

    def decode(batches: tuple[int, ...]) -> None:
        for batch in batches:
            ours, theirs = compiled.generate(PROMPTS[:batch], params), eager.generate(PROMPTS[:batch], params)
            assert [c.tokens for c in ours] == [c.tokens for c in theirs]

    decode((1, 3, 2))
    graphs = counters["stats"]["unique_graphs"]
    decode((1, 3, 2, 1))
    assert counters["stats"]["unique_graphs"] == graphs


def test_generation_stops_at_the_end_of_the_context(stories):
    generator = Generator(stories, max_seq_len=20)
    out = generator.generate([PROMPTS[2]], SamplingParams(max_new_tokens=100, ignore_eos=True))[0]
    assert len(PROMPTS[2]) + len(out.tokens) == 21  # the last token needs no cache slot
    assert out.finish_reason == "length"


def test_compiled_generator_leaves_the_callers_model_as_it_was(stories):
    """The decode kernels and the KV cache go on the generator's own module tree; the caller's model keeps
    its classes and mode and trains as an untouched twin does, and the generator holds no second copy of
    the weights."""
    twin = copy.deepcopy(stories)
    stories.train()
    classes = [type(m) for m in stories.modules()]
    generator = Generator(stories, compile=True)
    params = SamplingParams(max_new_tokens=6, ignore_eos=True)
    generator.generate(PROMPTS[:2], params)
    assert [type(m) for m in stories.modules()] == classes and stories.training
    assert all(layer.attention.cache is None for layer in stories.layers)
    ours = dict(stories.named_parameters())
    shared = {name: p.data_ptr() == ours[name].data_ptr() for name, p in generator.model.named_parameters()}
    assert shared and all(shared.values())
    tokens = torch.tensor([PROMPTS[2]])
    for model in (stories, twin.train()):
        model(tokens[:, :-1]).log_softmax(-1).gather(-1, tokens[:, 1:, None]).sum().backward()
    for (name, p), q in zip(stories.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        for p in stories.parameters():
            p.sub_(p.grad)  # a training step in place: the generator decodes with the new weights
    after = [c.tokens for c in generator.generate(PROMPTS[:2], params)]
    assert after == [c.tokens for c in Generator(stories).generate(PROMPTS[:2], params)]
