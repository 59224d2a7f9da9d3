"""Weight-only quantization for decoding: int8 per output channel, int4 in groups along the input.

Decoding one token reads every weight once and does two FLOPs with it, so its speed is memory bandwidth
over weight bytes: 8-bit weights read a quarter of float32's bytes, 4-bit an eighth. Activations stay
in floating point, except in compiled int8 steps of several rows (batched decoding), which round them
to int8 per row for an int8 GEMM (`kernels.int8_matmul`, as llama.cpp's Q8_0 does), and in products
that PyTorch's weight-only CPU kernels run in bfloat16: int4 products of a few rows on x86 CPUs
(`kernels.int4_matmul`), compiled one-row int8 steps where AVX2 is the widest vector set
(`kernels.int8_bf16_matmul`). As in gpt-fast, quantization is a transform of the model's linear
layers (and of its state dict, which we save as a model folder); the embedding stays as it is (a
lookup reads one row).

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
from llamafoundry.inference.kernels import (
    DECODE_ROWS,
    INT4_KERNEL,
    INT4_KERNEL_ROWS,
    INT8_BF16_KERNEL,
    INT8_GEMM,
    decode_matmul,
    int4_matmul,
    int4_pack,
    int8_bf16_matmul,
    int8_matmul,
)
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
        # Compiled steps of several rows (batched decoding) take the int8 GEMM where it is fast (VNNI):
        # 1.8x our float32 batch-8 decode where dequantizing to a float GEMM ran at 0.7x. It rounds the
        # activations, so eager code (prefills, perplexity) keeps float activations and its numbers.
        compiling, rows = torch.compiler.is_compiling(), x.numel() // x.shape[-1]
        if compiling and rows > DECODE_ROWS and INT8_GEMM:
            return int8_matmul(x, self.weight, self.scales)
        if compiling and rows <= DECODE_ROWS and INT8_BF16_KERNEL:
            return int8_bf16_matmul(x, self.weight, self.scales)
        # The per-row scale commutes with the sum over inputs: apply it once per output.
        return decode_matmul(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)


class Int4Linear(nn.Module):
    """A bias-free linear layer with 4-bit weights in groups of `group_size` inputs.

    `weight` is uint8 [out, in/2], two values per byte (the even input in the low nibble); `scales`
    and `zeros` are [out, in/group_size]. On a CPU with PyTorch's int4 kernel (`kernels.INT4_KERNEL`)
    the layer also holds the weight in that kernel's layout (`packed`, built on load, never saved: as
    many bytes again as `weight`), through which products of up to `INT4_KERNEL_ROWS` rows run.
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
        self.register_buffer("packed", None, persistent=False)
        self.register_buffer("scales_and_zeros", None, persistent=False)
        self.register_load_state_dict_post_hook(Int4Linear._repack)

    def _pack(self) -> None:
        """`packed` and `scales_and_zeros` for the int4 kernel, where it runs (float32-exact elsewhere)."""
        # The kernel takes outputs in blocks of 16 (up to 64, AVX-512's width).
        if INT4_KERNEL and self.weight.device.type == "cpu" and self.out_features % 16 == 0:
            self.packed = int4_pack(self.unpacked())
            pairs = torch.stack((self.scales, self.zeros), dim=-1)  # [out, groups, 2]
            self.scales_and_zeros = pairs.transpose(0, 1).contiguous().to(torch.bfloat16)

    @staticmethod
    def _repack(layer: Int4Linear, incompatible_keys: object) -> None:
        layer._pack()  # the loaded weight, in the kernel's layout

    @staticmethod
    def supports(out_features: int, in_features: int, group_size: int) -> bool:
        return in_features % group_size == 0

    @classmethod
    def from_float(cls, weight: torch.Tensor, group_size: int) -> Int4Linear:
        w = weight.detach().float()
        rows, cols = w.shape
        groups = w.reshape(rows, -1, group_size)
        scales, low = _int4_grid(groups)
        q = _int4_codes(groups, scales, low).reshape(rows, cols)
        return cls.from_codes(q, scales.squeeze(-1), low.squeeze(-1), weight.dtype)

    @classmethod
    def from_codes(
        cls, q: torch.Tensor, scales: torch.Tensor, low: torch.Tensor, dtype: torch.dtype
    ) -> Int4Linear:
        """The layer decoding codes `q` (uint8 [out, in], 0..15) as q * scale + low per group."""
        rows, cols = q.shape
        layer = cls(cols, rows, cols // scales.shape[1], dtype, q.device)
        layer.weight = q[:, 0::2] | (q[:, 1::2] << 4)
        # q = 8 decodes to the zero: the group's midpoint under round-to-nearest
        layer.scales, layer.zeros = scales.to(dtype), (low + 8 * scales).to(dtype)
        layer._pack()
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
        rows = x.numel() // x.shape[-1]
        if self.packed is not None and x.device.type == "cpu" and rows <= INT4_KERNEL_ROWS:
            return int4_matmul(x, self.packed, self.group_size, self.scales_and_zeros)
        return decode_matmul(x, self.dequantize(x.dtype))


def _int4_grid(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, low) per group of the last dimension: 16 levels spanning the group's min to max."""
    low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
    return (high - low).clamp(min=1e-6) / 15, low


def _int4_codes(w: torch.Tensor, scales: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    return torch.round((w - low) / scales).clamp(0, 15).to(torch.uint8)


def quantize_model(
    model: Transformer, config: QuantConfig, calibration: list[torch.Tensor] | None = None
) -> Transformer:
    """Replace the model's linear layers by quantized ones, in place; return the model.

    With `calibration` (sequences of token ids) the int4 layers are quantized by GPTQ on their inputs
    over those sequences, the others by round-to-nearest.
    """
    hessians = _hessians(model, config, calibration) if calibration else {}
    for name, linear in _linears(model):
        parent, _, attr = name.rpartition(".")
        layer = (
            gptq_int4(linear.weight, hessians[name], config.group_size)
            if name in hessians
            else _quantize_linear(name, linear, config)
        )
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    model.quantization = config
    return model


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _is_int4(name: str, linear: nn.Linear, config: QuantConfig) -> bool:
    rows, cols = linear.weight.shape
    return config.method == "int4" and name != "output" and Int4Linear.supports(rows, cols, config.group_size)


def _quantize_linear(name: str, linear: nn.Linear, config: QuantConfig) -> nn.Module:
    if _is_int4(name, linear, config):
        return Int4Linear.from_float(linear.weight, config.group_size)
    return Int8Linear.from_float(linear.weight)


@torch.inference_mode()
def _hessians(
    model: Transformer, config: QuantConfig, sequences: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """X^T X of each int4-bound layer's inputs X over the sequences, from hooks on the float model.

    All layers are recorded in one pass, so this holds sum(in_features^2) floats: 42 MiB for llama-15m,
    far more for billions of parameters (where GPTQ goes layer by layer instead).
    """
    hessians: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0].reshape(-1, module.in_features).float()
            hessians[name] = hessians.get(name, 0) + x.T @ x

        return hook

    handles = [
        linear.register_forward_hook(record(name))
        for name, linear in _linears(model)
        if _is_int4(name, linear, config)
    ]
    try:
        model.clear_cache()
        for ids in sequences:
            model(ids.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()
    return hessians


def gptq_int4(
    weight: torch.Tensor, hessian: torch.Tensor, group_size: int, block_size: int = 128
) -> Int4Linear:
    """GPTQ (Frantar et al., 2022): quantize the columns (inputs) in order, each column's rounding
    error compensated on the columns not yet quantized through the inverse Hessian of the layer's
    inputs, so that ||X W^T - X Q^T|| rather than ||W - Q|| is what is kept small. Groups get their
    scale and low from the error-updated weights when their first column comes up, as in the paper's
    reference code; updates beyond the current block of `block_size` columns are batched ("lazy").
    """
    w = weight.detach().float().clone()
    rows, cols = w.shape
    h = hessian.double().clone()  # the Cholesky factors of an ill-conditioned H want float64
    dead = h.diagonal() == 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(0.01 * h.diagonal().mean())  # the paper's dampening
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    q = torch.zeros(rows, cols, dtype=torch.uint8, device=w.device)
    scales = torch.zeros(rows, cols // group_size, device=w.device)
    low = torch.zeros_like(scales)
    block = max(block_size, group_size)  # a group never straddles two blocks
    for start in range(0, cols, block):
        end = min(start + block, cols)
        errors = _gptq_block(w, hinv, (q, scales, low), start, end, group_size)
        w[:, end:] -= errors @ hinv[start:end, end:]
    return Int4Linear.from_codes(q, scales, low, weight.dtype)


def _gptq_block(
    w: torch.Tensor,
    hinv: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    start: int,
    end: int,
    group_size: int,
) -> torch.Tensor:
    """Quantize columns start:end of `w` into `out` (codes, scales, lows), updating the block's later
    columns in place; return the scaled errors that the columns after the block still owe."""
    q, scales, low = out
    errors = torch.zeros(w.shape[0], end - start, device=w.device)
    for col in range(start, end):
        g, i = col // group_size, col - start
        if col % group_size == 0:
            s, lo = _int4_grid(w[:, col : col + group_size])
            scales[:, g], low[:, g] = s[:, 0], lo[:, 0]
        q[:, col] = _int4_codes(w[:, col], scales[:, g], low[:, g])
        errors[:, i] = (w[:, col] - (q[:, col] * scales[:, g] + low[:, g])) / hinv[col, col]
        w[:, col:end] -= errors[:, i : i + 1] * hinv[col, col:end]
    return errors


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
    """Bytes of weights one decode step reads: every stored tensor (the state dict; an int4 layer's
    kernel layout is the same bytes again, read instead of its `weight`) except the embedding table
    (one row of it is read), the rotary tables and the KV cache."""
    total = 0
    for name, t in model.state_dict().items():
        if not name.startswith(("tok_embeddings.", "rope_")) and ".cache." not in name:
            total += t.numel() * t.element_size()
    return total
