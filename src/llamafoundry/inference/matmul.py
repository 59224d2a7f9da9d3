"""The matrix-vector products of decoding, written so that torch.compile streams the weights once.

A decoding step multiplies a few activation rows by every weight matrix: it is bound by reading the
weights from memory, not by arithmetic. Written as a broadcast product summed over the inputs,
`(x[..., None, :] * w).sum(-1)`, inductor turns it into one vectorised reduction kernel per layer that
reads each weight once, at close to memory bandwidth, and fuses whatever produces `w` (the
dequantization of int8 / int4 weights) into that read. It never writes a dequantized copy of a weight,
and for one row (batch-1 decoding) it beats MKL's matrix-vector product on this machine's AMD CPU by
about 2x. With several rows the fused kernel loses: compiled batch-8 decoding ran at 47 tokens/s with it
and 223 with MKL's GEMM (benchmarks/decode_throughput.py), so only single rows take it. Eager code and
prefills (many rows, bound by arithmetic) keep the plain matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DECODE_ROWS = 1  # up to this many rows (tokens), the fused form wins


def decode_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T; as a fused reduction when compiled and x has at most DECODE_ROWS rows (tokens).

    The product is laid out [out, rows] so that the kernel's outer loop runs over weight rows: each is
    read from memory once and used for every activation row while it sits in L1.
    """
    rows = x.numel() // x.shape[-1]
    if torch.compiler.is_compiling() and rows <= DECODE_ROWS:
        products = (weight.unsqueeze(1) * x.reshape(rows, x.shape[-1])).sum(-1)  # [out, rows]
        return products.t().reshape(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


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


def use_decode_linears(model: nn.Module) -> nn.Module:
    """Swap the model's plain bias-free `nn.Linear` layers for `DecodeLinear`s sharing their weights."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.bias is None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, DecodeLinear.wrap(module))
    return model
