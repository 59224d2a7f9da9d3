"""Weight-only quantization: the kernels against plain dequantized matmuls, logits and perplexity against
float32, and quantized model folders saved and loaded."""

from __future__ import annotations

import copy

import pytest
import torch

from llamafoundry.checkpoint import export, load_model, save_model
from llamafoundry.errors import UserError
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.kernels import INT4_KERNEL, INT4_KERNEL_ROWS
from llamafoundry.inference.perplexity import perplexity
from llamafoundry.inference.quantize import Int4Linear, Int8Linear, QuantConfig, quantize_model, weight_bytes
from llamafoundry.inference.sampling import SamplingParams


def test_int8_layer_is_its_dequantized_matmul_and_close_to_float():
    torch.manual_seed(0)
    w, x = torch.randn(96, 64) * 0.05, torch.randn(3, 5, 64)
    layer = Int8Linear.from_float(w)
    assert layer.weight.dtype == torch.int8 and layer.scales.shape == (96,)
    torch.testing.assert_close(layer(x), x @ layer.dequantize().T, atol=1e-5, rtol=1e-5)
    assert (layer.dequantize() - w).abs().max() <= w.abs().amax(dim=1).max() / 254 + 1e-7  # half a step
    torch.testing.assert_close(layer(x.bfloat16()).float(), layer(x), atol=0.05, rtol=0.02)


@pytest.mark.slow
@torch.no_grad()
def test_compiled_decoding_form_equals_eager():
    torch.manual_seed(0)
    w, x = torch.randn(96, 128) * 0.05, torch.randn(2, 1, 128)
    for layer in (Int4Linear.from_float(w, 32),):  # int8: test_quant_int8.py
        compiled = torch.compile(layer, fullgraph=True)
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_layer_is_its_dequantized_matmul(group_size):
    torch.manual_seed(0)
    w, x = torch.randn(48, 128) * 0.05, torch.randn(4, 128)
    layer = Int4Linear.from_float(w, group_size)
    assert layer.weight.dtype == torch.uint8 and layer.weight.shape == (48, 64)
    assert layer.unpacked().max() <= 15
    exact = x @ layer.dequantize().T
    many = x.repeat(INT4_KERNEL_ROWS // 4 + 1, 1)  # past the kernel's rows: the float32 matmul
    torch.testing.assert_close(layer(many)[:4], exact, atol=1e-5, rtol=1e-5)
    # A few rows run through PyTorch's int4 CPU kernel in bfloat16 where it is vectorized.
    assert (layer.packed is not None) == INT4_KERNEL
    assert (layer(x) - exact).norm() / exact.norm() < (1e-2 if INT4_KERNEL else 1e-6)  # measured 3e-3
    # The kernel in float32 gives our numbers: our codes, scales and zeros follow its convention.
    packed = torch._convert_weight_to_int4pack_for_cpu(layer.unpacked().to(torch.int32), 2)
    scales_and_zeros = torch.stack((layer.scales, layer.zeros), dim=-1).transpose(0, 1).contiguous()
    kernel = torch._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
    torch.testing.assert_close(exact, kernel, atol=1e-5, rtol=1e-5)
    groups = w.reshape(48, -1, group_size)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    assert ((layer.dequantize() - w).reshape(48, -1, group_size).abs() <= step.unsqueeze(-1) / 2 + 1e-6).all()


def _sample_text(model, tokens: int = 400) -> list[int]:
    """A held-out text in stories260K's own vocabulary: a sample of the float model (its tokenizer is not
    public, so no real text can be tokenized for it)."""
    out = Generator(model).generate(
        [[1]], SamplingParams(max_new_tokens=tokens, temperature=1.0, seed=0, ignore_eos=True)
    )
    model.clear_cache()
    return [1] + out[0].tokens


def _relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out - reference).norm() / (reference - reference.mean()).norm())


@torch.no_grad()
def test_quantized_logits_stay_close_to_float(random_model):
    model = random_model(dim=256, n_layers=2, n_heads=4, vocab_size=2048, std=0.02)
    x = torch.randint(0, 2048, (2, 96), generator=torch.Generator().manual_seed(0))
    reference = model(x)
    int8 = quantize_model(copy.deepcopy(model), QuantConfig("int8"))
    int4 = quantize_model(copy.deepcopy(model), QuantConfig("int4", group_size=64))
    assert isinstance(int4.layers[0].attention.wq, Int4Linear) and isinstance(int4.output, Int8Linear)
    int8_error, int4_error = _relative_error(int8(x), reference), _relative_error(int4(x), reference)
    assert int8_error < 0.03  # measured 0.017
    assert int8_error < int4_error < 0.3  # measured 0.20: 16 levels per group of 64 weights
    assert weight_bytes(int8) < weight_bytes(model) / 3.9 and weight_bytes(int4) < weight_bytes(int8)


@torch.no_grad()
def test_trained_model_perplexity_moves_little_in_int8_and_more_in_int4(stories):
    ids = _sample_text(stories)
    base = perplexity(stories, ids)
    int8 = quantize_model(copy.deepcopy(stories), QuantConfig("int8"))
    int4 = quantize_model(copy.deepcopy(stories), QuantConfig("int4", group_size=32))
    int8_ppl, int4_ppl = perplexity(int8, ids), perplexity(int4, ids)
    # stories260K is tiny (dim 64, head_dim 8): every weight matters, so even int8 costs a few percent.
    assert base < int8_ppl < base * 1.08
    assert int8_ppl < int4_ppl
    prompt, params = [[1, 403, 407, 261]], SamplingParams(max_new_tokens=12, ignore_eos=True)
    assert (
        Generator(int8).generate(prompt, params)[0].tokens
        == Generator(stories).generate(prompt, params)[0].tokens
    )


@pytest.mark.parametrize("method", ["int8", "int4"])
@torch.no_grad()
def test_quantized_folder_round_trips(stories_folder, tmp_path, method):
    model, tokenizer, _ = load_model(stories_folder)
    quantize_model(model, QuantConfig(method, group_size=32))
    save_model(tmp_path / "q", model, tokenizer)
    loaded, loaded_tok, cfg = load_model(tmp_path / "q")
    assert cfg == model.cfg and loaded_tok.serialized() == tokenizer.serialized()
    x = torch.tensor([[1, 403, 407, 261, 5]])
    assert torch.equal(loaded(x), model(x))
    assert type(loaded.layers[1].attention.wq) is type(model.layers[1].attention.wq)
    if method == "int4":  # the kernel's layout is rebuilt on load, not saved
        assert (loaded.layers[1].attention.wq.packed is not None) == INT4_KERNEL
    with pytest.raises(UserError, match="already quantized"):
        load_model(tmp_path / "q", quantize=QuantConfig("int8"))
    with pytest.raises(UserError, match="quantized model is written only as our native folder"):
        export(tmp_path / "hf", loaded, loaded_tok, format="hf")


def test_load_model_quantizes_and_supplies_the_tokenizer(stories_folder, meta_tokenizer, tmp_path):
    """One loader: quantizing on load equals quantizing after, and `tokenizer` supplies a tokenizer to a
    folder without one (and must fit the model's vocabulary)."""
    model, tokenizer, _ = load_model(stories_folder)
    expected = quantize_model(model, QuantConfig("int8"))
    bare = save_model(tmp_path / "bare", load_model(stories_folder)[0])
    tokenizer_file = tmp_path / "tokenizer.model"
    tokenizer_file.write_bytes(tokenizer.serialized())
    assert load_model(bare)[1] is None
    loaded, loaded_tok, _ = load_model(bare, quantize="int8", tokenizer=tokenizer_file)
    x = torch.tensor([[1, 403, 407, 261, 5]])
    assert torch.equal(loaded(x), expected(x))
    assert loaded_tok.serialized() == tokenizer.serialized()
    with pytest.raises(UserError, match="the tokenizer the model was trained with"):
        load_model(bare, tokenizer=meta_tokenizer)  # 32,000 pieces for a 512-token model


def test_bad_quantization_settings_are_user_errors():
    with pytest.raises(UserError, match="int8, int4"):
        QuantConfig("int3")
    with pytest.raises(UserError, match="group size"):
        QuantConfig("int4", group_size=48)
