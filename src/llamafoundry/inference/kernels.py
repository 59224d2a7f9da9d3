"""The decode step's products, written so that torch.compile streams the weights and the cache once.

A decoding step multiplies a few activation rows by every weight matrix and attends with one query per
row over the whole KV cache: it is bound by reading weights and cache from memory, not by arithmetic.
Written as broadcast products summed over the shared dimension, `(x[..., None, :] * w).sum(-1)`,
inductor turns each into one vectorised reduction kernel that reads each weight (or cached key and
value) once, at close to memory bandwidth, and fuses whatever produces the operand (the dequantization
of int8 / int4 weights, the attention mask and softmax) into that read. It never writes a dequantized
copy of a weight.

Measured on this project's 2-core AMD CPU (benchmarks/decode_throughput.py and A/B runs of one
process): for one row the fused matrix-vector product beats MKL's by about 2x; with several rows it
loses (compiled batch-8 decoding ran at 47 tokens/s with it and 223 with MKL's GEMM), so only single
rows take it. Single-query attention in the fused form beats the flash-attention kernel, whose blocking
is made for many queries, at batch 1 and batch 8 alike (decode +9% fp32, +16% int8 at batch 1; +8% fp32
at batch 8). Eager code and prefills (many rows, bound by arithmetic) keep the plain matmul and SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llamafoundry.model import Attention

DECODE_ROWS = 1  # up to this many rows (tokens), the fused matrix-vector product wins
# AVX-512 masks short loads; AVX2 copies them through the stack, so there one-row int8 products go
# through PyTorch's int8 kernel instead (see int8_bf16_matmul).
INT8_BF16_KERNEL = torch.backends.cpu.get_cpu_capability() == "AVX2"
# `torch._int_mm` runs oneDNN's int8 GEMM where the CPU has VNNI; elsewhere a reference loop, 2x slower
# than dequantizing to a float GEMM (8 rows x 4096 x 1024: 18.6 ms against 9.5 ms; batch-8 int8 decoding
# 41.2 tok/s against 54.4, decode_throughput on a 2-core AVX2 EPYC). The check is private and has been
# renamed across releases; where it is missing, the int8 GEMM stays on as before.
INT8_GEMM = getattr(torch.cpu, "_is_vnni_supported", lambda: True)()
# PyTorch's int4 CPU kernel (the tinygemm that gpt-fast and torchao call) is vectorized for bfloat16
# activations on AVX2 and AVX-512 only; in float32 or elsewhere it is a scalar loop.
INT4_KERNEL = hasattr(torch, "_weight_int4pack_mm_for_cpu") and (
    torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
)
# Its time grows with the rows (it is bound by unpacking, not by memory); past about a hundred rows a
# dequantized float GEMM wins (1536 x 512 weight: 0.67 ms against 1.8 ms at 64 rows, 7.4 against 3.2 at 512).
INT4_KERNEL_ROWS = 64


def materialize(x: torch.Tensor) -> torch.Tensor:
    """x computed into a buffer of its own when compiled, before a fused reduction reads it.

    Inductor inlines an elementwise producer into the reduction that consumes it, and the reduction
    then recomputes it for every output: the RMSNorm (residual add, scale, gain) once per weight row of
    the projection after it, the softmax once per value dimension. Those loads and conversions beside
    each weight load made the int8 output projection (32000 x 512) take 1.37 ms where 0.62 ms reads it.
    The prim is the one inductor's own lowerings use to fix a buffer's layout (`use_decode_kernels`
    registers it). It has no gradient, so a step traced for autograd leaves x as it is.
    """
    if torch.compiler.is_compiling() and not x.requires_grad:
        return torch.ops.prims.inductor_force_stride_order(x, x.stride())
    return x


def decode_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T; as a fused reduction when compiled and x has at most DECODE_ROWS rows (tokens).

    The product is laid out [out, rows] so that the kernel's outer loop runs over weight rows: each is
    read from memory once and used for every activation row while it sits in L1.
    """
    rows = x.numel() // x.shape[-1]
    if torch.compiler.is_compiling() and rows <= DECODE_ROWS:
        x = materialize(x)
        products = (weight.unsqueeze(1) * x.reshape(rows, x.shape[-1])).sum(-1)  # [out, rows]
        return products.t().reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


def int8_bf16_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ (weight * scales[:, None]).T for int8 `weight` [out, in] by PyTorch's int8 weight-only CPU
    kernel (`torch._weight_int8pack_mm`, gpt-fast's) in bfloat16, in x's dtype.

    Where AVX2 is the widest vector set, inductor's fused reduction loads the int8 weight through a
    scalar copy per vector (no masked loads), and batch-1 int8 decoding ran at 0.26x our float32
    (18.8 tok/s against 73.5 on a 2-core AVX2 EPYC); in bfloat16 this kernel widens the bytes in
    registers: batch-1 int8 decoding at 285 tok/s against 85 for int32-word reads of the weight (the
    previous way; dim 512, 8 layers, a Sapphire Rapids held to AVX2 by ATEN_CPU_CAPABILITY=avx2).
    Rounding x and the output to bfloat16 moves the product by about 0.3%.
    """
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    out = torch._weight_int8pack_mm(rows, weight, materialize(scales.to(torch.bfloat16)))
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def int8_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ (weight * scales[:, None]).T for int8 `weight` [out, in], with x quantized to int8 per row.

    Each row of x gets one scale (its largest magnitude over 127) and the product runs as an int8 x int8
    GEMM with int32 sums (`torch._int_mm`: oneDNN's VNNI kernel, see INT8_GEMM), as llama.cpp's Q8_0 does
    (it scales blocks of 32). It reads the int8 weight as it is, where a float GEMM first writes a float
    copy of it: compiled batch-8 int8 decoding ran at 1.83x our float32's (0.84x llama.cpp Q8_0), where
    the float GEMM ran below float32. The rounding of x costs up to half a step (max |x| / 254) per input.
    """
    rows = x.reshape(-1, x.shape[-1]).float()
    step = rows.abs().amax(dim=-1, keepdim=True).clamp(min=1e-30) / 127
    q = torch.round(rows / step).to(torch.int8)
    out = torch._int_mm(q, weight.t()).float() * step * scales.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def int4_pack(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes (uint8 [out, in], 0..15) in the layout of `int4_matmul`'s kernel. The layout depends
    on the CPU's vector width, so it is built on the machine that runs it and never saved."""
    return torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 2)


def int4_matmul(
    x: torch.Tensor, packed: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor
) -> torch.Tensor:
    """x @ w.T for int4 weights w = (q - 8) * scale + zero per group (`int4_pack`ed q; scales and zeros
    bfloat16 [in / group_size, out, 2]), by PyTorch's int4 CPU kernel in bfloat16, in x's dtype.

    Rounding x, the scales and the output to bfloat16 moves the product by about 0.3% (relative norm
    against the float32 dequantized matmul), a tenth of int4's own error. It unpacks the nibbles in
    vector registers and never writes a dequantized weight: batch-1 int4 decoding ran 2.8x faster than
    the compiled fused reduction (258 tokens/s against 91, dim 512, 8 layers, group 32; 2-core
    Sapphire Rapids), a 4096 x 4096 product 0.56 ms against 1.29 ms for float32's.
    """
    rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    pairs = scales_and_zeros.to(torch.bfloat16)  # a no-op unless the module was cast
    out = torch._weight_int4pack_mm_for_cpu(rows, packed, group_size, pairs)
    return out.to(x.dtype).reshape(*x.shape[:-1], packed.shape[0])


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one query per row, q [B, H, 1, D], over cached k, v [B, H_kv, S, D] where the boolean
    `mask` (broadcastable to [B, H, 1, S]) is True; [B, H, 1, D].

    Query heads are grouped under their key/value head ([B, H_kv, G, ...]) so each cached key and value
    is read once for all the queries that share it (grouped-query attention).
    """
    batch, heads, _, head_dim = q.shape
    kv_heads, span = k.shape[1], k.shape[2]
    group = heads // kv_heads
    q = materialize(q).reshape(batch, kv_heads, group, 1, head_dim)
    scores = (q * k.unsqueeze(2)).sum(-1) * head_dim**-0.5  # [B, H_kv, G, S]
    visible = mask.expand(batch, heads, 1, span).reshape(batch, kv_heads, group, span)
    probs = materialize(torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1))
    out = (probs.unsqueeze(-1) * v.unsqueeze(2)).sum(-2)  # [B, H_kv, G, D]
    return out.reshape(batch, heads, 1, head_dim)


class DecodeLinear(nn.Linear):
    """An `nn.Linear` (bias-free) whose products with a few rows take the fused form when compiled."""

    @classmethod
    def wrap(cls, linear: nn.Linear) -> DecodeLinear:
        """The same weight Parameter (shared, not copied) in a DecodeLinear."""
        layer = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        layer.weight = linear.weight
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode_matmul(x, self.weight)


class DecodeAttention(Attention):
    """An `Attention` whose single-query steps over a boolean-masked cache take the fused form when
    compiled."""

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            torch.compiler.is_compiling()
            and q.shape[2] == 1
            and mask is not None
            and mask.dtype == torch.bool
        ):
            return decode_attention(q, k, v, mask)
        return super().attend(q, k, v, mask)


def use_decode_kernels(model: nn.Module) -> nn.Module:
    """Give the model's bias-free `nn.Linear` layers and its `Attention` layers the decode kernels.

    Linear layers become `DecodeLinear`s sharing their weights; attention layers change class in place
    (as FSDP2's `fully_shard` does), keeping their projections and cache. `Generator` does this to its
    own shallow copy of a model, never to the caller's, when it compiles.
    """
    import torch._inductor.inductor_prims  # noqa: F401  (registers the prim of `materialize`)

    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.bias is None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, DecodeLinear.wrap(module))
        elif type(module) is Attention:
            module.__class__ = DecodeAttention
    return model
