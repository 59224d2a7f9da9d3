"""The int8 GEMM that compiled steps of several rows take where the CPU has VNNI (int8 activations x int8
weights): its numbers against a float reference of the same rounding, eager and compiled; and the
layer's one-row steps."""

from __future__ import annotations

import pytest
import torch

from llamafoundry.inference.kernels import INT8_BF16_KERNEL, INT8_GEMM, int8_matmul
from llamafoundry.inference.quantize import Int8Linear


def _reference(x: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
    """The int8 GEMM's product in float64: x rounded to 255 levels per row, times the int8 weight."""
    rows = x.reshape(-1, x.shape[-1]).double()
    step = rows.abs().amax(-1, keepdim=True) / 127
    product = torch.round(rows / step) @ layer.weight.double().T * step * layer.scales.double()
    return product.reshape(*x.shape[:-1], -1).float()


@pytest.fixture
def layer() -> Int8Linear:
    torch.manual_seed(0)
    return Int8Linear.from_float(torch.randn(96, 160) * 0.05)


@pytest.mark.parametrize("shape", [(8, 160), (2, 4, 160), (1, 160)])
@torch.no_grad()
def test_int8_gemm_is_its_rounded_product(layer, shape):
    x = torch.randn(*shape) * 3
    out = int8_matmul(x, layer.weight, layer.scales)
    torch.testing.assert_close(out, _reference(x, layer), atol=1e-5, rtol=1e-5)
    # Half a step of each rounded input, weighted by the weight's magnitude, bounds the change.
    bound = (x.abs().amax(-1, keepdim=True) / 254) * layer.dequantize().abs().sum(-1)
    assert ((out - x @ layer.dequantize().T).abs() <= bound + 1e-5).all()
    assert not torch.equal(out, x @ layer.dequantize().T)  # the activations were rounded


@pytest.mark.slow
@pytest.mark.parametrize("rows", [1, 8])
@torch.no_grad()
def test_compiled_int8_layer(layer, rows):
    """One row: the fused weight-only product, equal to eager (PyTorch's int8 kernel in bfloat16 where
    AVX2 is the widest vector set). Several: the int8 GEMM with VNNI, else the float product (the
    reference int8 GEMM without VNNI ran slower than it)."""
    x = torch.randn(rows, 1, 160)
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)(x)
    expected = _reference(x, layer) if rows > 1 and INT8_GEMM else layer(x)
    if rows == 1 and INT8_BF16_KERNEL:
        assert (compiled - expected).norm() / expected.norm() < 1e-2
        return
    torch.testing.assert_close(compiled, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer(x), x @ layer.dequantize().T, atol=1e-5, rtol=1e-5)  # eager: float


@torch.no_grad()
def test_int8_gemm_keeps_the_dtype_and_zero_rows():
    torch.manual_seed(0)
    weight, scales = torch.randint(-127, 128, (32, 64), dtype=torch.int8), torch.rand(32)
    x = torch.randn(4, 64).bfloat16()
    x[1] = 0
    out = int8_matmul(x, weight, scales)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 32)
    assert torch.equal(out[1], torch.zeros(32, dtype=torch.bfloat16))
