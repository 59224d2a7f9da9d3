"""The decode kernels compute what the model's plain layers compute."""

import pytest
import torch
import torch.nn.functional as F

from llamafoundry.inference.kernels import decode_attention, decode_matmul, int8_bf16_matmul


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_decode_attention_equals_sdpa(kv_heads):
    torch.manual_seed(0)
    batch, heads, span, head_dim = 3, 4, 40, 16
    q = torch.randn(batch, heads, 1, head_dim)
    k, v = torch.randn(2, batch, kv_heads, span, head_dim)
    # Each row sees its own stretch of the cache, as left-padded rows of a decode batch do.
    keys = torch.arange(span)
    mask = ((keys >= torch.tensor([0, 5, 17]).view(-1, 1)) & (keys <= 30)).view(batch, 1, 1, span)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != heads)
    torch.testing.assert_close(decode_attention(q, k, v, mask), expected, atol=1e-6, rtol=1e-5)


def test_compiled_decode_matmul_equals_linear():
    torch.manual_seed(0)
    x, weight = torch.randn(1, 1, 64), torch.randn(96, 64)
    compiled = torch.compile(decode_matmul, fullgraph=True)(x, weight)
    torch.testing.assert_close(compiled, F.linear(x, weight), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_int8_bf16_kernel_is_the_scaled_product_to_bfloat16(compiled):
    torch.manual_seed(0)
    weight = torch.randint(-128, 128, (24, 64), dtype=torch.int8)
    weight[0, :4] = torch.tensor([-128, 127, -1, 0], dtype=torch.int8)  # the extremes of a byte
    x, scales = torch.randn(1, 1, 64), torch.rand(24) + 0.5
    matmul = torch.compile(int8_bf16_matmul, fullgraph=True) if compiled else int8_bf16_matmul
    out = matmul(x, weight, scales)
    assert out.shape == (1, 1, 24) and out.dtype == torch.float32
    exact = F.linear(x, weight.float() * scales[:, None])
    rounded = F.linear(x.bfloat16().float(), weight.float() * scales.bfloat16().float()[:, None])
    # Its error is the bfloat16 rounding of x, the scales and the output, no more.
    torch.testing.assert_close(out, rounded, atol=0, rtol=2**-8)
    assert (out - exact).norm() / exact.norm() < 1e-2
