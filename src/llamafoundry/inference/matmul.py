"""The matrix-vector products of decoding, written so that torch.compile streams the weights once.

A decoding step multiplies a few activation rows by every weight matrix: it is bound by reading the
weights from memory, not by arithmetic. Written as a broadcast product summed over the inputs,
`(x[..., None, :] * w).sum(-1)`, inductor turns it into one vectorised reduction kernel per layer that
reads each weight once, at close to memory bandwidth, and fuses whatever produces `w` (the
dequantization of int8 / int4 weights) into that read. On these CPUs that beats the BLAS matrix-vector
product, and it never writes a dequantized copy of a weight. Eager code and prefills (many rows, bound by
arithmetic) keep the plain matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def decode_matmul(x: torch.Tensor, weight: torch.Tensor, max_rows: int) -> torch.Tensor:
    """x @ weight.T; as a fused reduction when compiled and x has at most `max_rows` rows (tokens)."""
    if torch.compiler.is_compiling() and x.numel() // x.shape[-1] <= max_rows:
        return (x.unsqueeze(-2) * weight).sum(-1)
    return F.linear(x, weight)


class DecodeLinear(nn.Linear):
    """An `nn.Linear` (bias-free) whose single-row products take the fused form when compiled.

    Above one row a float matmul is better left to BLAS: the weights are read once per call either way,
    and its blocking reuses them across rows.
    """

    @classmethod
    def wrap(cls, linear: nn.Linear) -> DecodeLinear:
        """The same weight Parameter (shared, not copied) in a DecodeLinear."""
        layer = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        layer.weight = linear.weight
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode_matmul(x, self.weight, max_rows=1)


def use_decode_linears(model: nn.Module) -> nn.Module:
    """Swap the model's plain bias-free `nn.Linear` layers for `DecodeLinear`s sharing their weights."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.bias is None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, DecodeLinear.wrap(module))
    return model
