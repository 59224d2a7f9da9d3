"""Weight-only quantization for decoding: int8 per output channel, int4 in groups along the input.

Decoding one token reads every weight once and does two FLOPs with it, so its speed is memory bandwidth
over weight bytes: 8-bit weights read a quarter of float32's bytes, 4-bit an eighth. Activations stay
in floating point, except in compiled int8 steps of several rows (batched decoding), which round them
to int8 per row for an int8 GEMM (`kernels.int8_matmul`, as llama.cpp's Q8_0 does). As in gpt-fast,
quantization is a transform of the model's linear layers (and of its state dict, which we save as a
model folder); the embedding stays as it is (a lookup reads one row).

- int8: w ~= q * s, q in [-127, 127], one scale per output row.
- int4: w ~= (q - 8) * s + z, q in [0, 15], a scale and zero per `group_size` inputs of each row (the
  tinygemm convention); two values per byte. The output projection is kept in int8, as llama.cpp keeps
  it above 4 bits: its errors go straight into the logits.

The matmul is written so that torch.compile reads only the quantized bytes (see `kernels.decode_matmul`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from llamafoundry.errors import UserError
from llamafoundry.inference.kernels import DECODE_ROWS, decode_matmul, int8_matmul
from llamafoundry.model import Transformer

METHODS = ("int8", "int4")
INT4_GROUP_SIZES = (32, 64, 128, 256)


@dataclass(frozen=True)
class QuantConfig:
    """How a model's linear layers are quantized; stored in the folder's config.json."""

    method: str = "int8"
    group_size: int = 128  # int4 only

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise UserError(f"unknown quantization {self.method!r}; choose one of {', '.join(METHODS)}")
        if type(self.group_size) is not int:  # 32.0 == 32, but a float cannot shape a tensor
            raise UserError(f"the quantization group size must be an integer, got {self.group_size!r}")
        if self.method == "int4" and self.group_size not in INT4_GROUP_SIZES:
            raise UserError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {self.group_size}")

    def to_dict(self) -> dict:
        return asdict(self)


class Int8Linear(nn.Module):
    """A bias-free linear layer whose weight is int8 [out, in] with a float scale per output row."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> Int8Linear:
        w = weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        layer = cls(w.shape[1], w.shape[0], weight.dtype, weight.device)
        layer.weight = torch.round(w / scales.unsqueeze(1)).clamp(-127, 127).to(torch.int8)
        layer.scales = scales.to(weight.dtype)
        return layer

    def dequantize(self) -> torch.Tensor:
        return self.weight.to(self.scales.dtype) * self.scales.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Compiled steps of several rows (batched decoding) take the int8 GEMM: 1.8x our float32 batch-8
        # decode where dequantizing to a float GEMM ran at 0.7x. It rounds the activations, so eager
        # code (prefills, perplexity) keeps float activations and its numbers.
        if torch.compiler.is_compiling() and x.numel() // x.shape[-1] > DECODE_ROWS:
            return int8_matmul(x, self.weight, self.scales)
        # The per-row scale commutes with the sum over inputs: apply it once per output.
        return decode_matmul(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)


class Int4Linear(nn.Module):
    """A bias-free linear layer with 4-bit weights in groups of `group_size` inputs.

    `weight` is uint8 [out, in/2], two values per byte (the even input in the low nibble); `scales`
    and `zeros` are [out, in/group_size].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=dtype, device=device))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=dtype, device=device))

    @staticmethod
    def supports(out_features: int, in_features: int, group_size: int) -> bool:
        return in_features % group_size == 0

    @classmethod
    def from_float(cls, weight: torch.Tensor, group_size: int) -> Int4Linear:
        w = weight.detach().float()
        rows, cols = w.shape
        groups = w.reshape(rows, -1, group_size)
        low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
        scales = (high - low).clamp(min=1e-6) / 15
        zeros = low + 8 * scales  # q = 8 decodes to the group's midpoint
        q = torch.round((groups - low) / scales).clamp(0, 15).to(torch.uint8).reshape(rows, cols)
        layer = cls(cols, rows, group_size, weight.dtype, weight.device)
        layer.weight = q[:, 0::2] | (q[:, 1::2] << 4)
        layer.scales, layer.zeros = scales.squeeze(-1).to(weight.dtype), zeros.squeeze(-1).to(weight.dtype)
        return layer

    def unpacked(self) -> torch.Tensor:
        """The 4-bit values, uint8 [out, in]."""
        return torch.stack((self.weight & 0xF, self.weight >> 4), dim=-1).reshape(self.out_features, -1)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.scales.dtype
        q = self.unpacked().to(dtype).reshape(self.out_features, -1, self.group_size)
        w = (q - 8) * self.scales.to(dtype).unsqueeze(-1) + self.zeros.to(dtype).unsqueeze(-1)
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode_matmul(x, self.dequantize(x.dtype))


def quantize_model(model: Transformer, config: QuantConfig) -> Transformer:
    """Replace the model's linear layers by quantized ones, in place; return the model."""
    for name, linear in _linears(model):
        parent, _, attr = name.rpartition(".")
        setattr(
            model.get_submodule(parent) if parent else model, attr, _quantize_linear(name, linear, config)
        )
    model.quantization = config
    return model


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _quantize_linear(name: str, linear: nn.Linear, config: QuantConfig) -> nn.Module:
    rows, cols = linear.weight.shape
    if config.method == "int4" and name != "output" and Int4Linear.supports(rows, cols, config.group_size):
        return Int4Linear.from_float(linear.weight, config.group_size)
    return Int8Linear.from_float(linear.weight)


def quantized_skeleton(model: Transformer, config: QuantConfig, kinds: dict[str, str]) -> Transformer:
    """Swap the linear layers of a (meta-device) model for empty quantized layers of the given kinds
    ('int8' or 'int4' per layer name), ready for `load_state_dict(assign=True)`."""
    problem = _kinds_problem(kinds, config, {name for name, _ in _linears(model)})
    if problem:
        raise UserError(f"malformed quantization layers: {problem}; quantize the model again")
    for name, linear in _linears(model):
        rows, cols = linear.weight.shape
        dtype, device = linear.weight.dtype, linear.weight.device
        layer: nn.Module
        if kinds.get(name) == "int4":
            layer = Int4Linear(cols, rows, config.group_size, dtype, device)
        else:
            layer = Int8Linear(cols, rows, dtype, device)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    model.quantization = config
    return model


def _kinds_problem(kinds: dict, config: QuantConfig, layers: set[str]) -> str | None:
    for name, kind in kinds.items():
        if name not in layers:
            return f"{name!r} is no linear layer of this model"
        if kind not in METHODS:
            return f"{name} is {kind!r}, not one of {', '.join(METHODS)}"
        if kind == "int4" and config.method != "int4":
            return f"{name} is int4 in a {config.method} model"
    return None


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """Which quantization each linear layer of a quantized model has."""
    return {
        name: "int4" if isinstance(m, Int4Linear) else "int8"
        for name, m in model.named_modules()
        if isinstance(m, Int4Linear | Int8Linear)
    }


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter and buffer except the embedding table
    (one row of it is read), the rotary tables and the KV cache."""
    total = 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not name.startswith(("tok_embeddings.", "rope_")) and ".cache." not in name:
            total += t.numel() * t.element_size()
    return total
