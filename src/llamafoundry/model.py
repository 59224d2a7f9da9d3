"""The LLaMA transformer, as section 2.2 of the paper describes it.

A decoder-only transformer (Vaswani et al., 2017) with three changes:
pre-normalisation with RMSNorm, the SwiGLU activation, and rotary position embeddings.
No biases anywhere; the input embedding and the output projection are separate matrices (Llama 3.2's
small models share one).

Names follow Meta's released `llama/model.py`, so a Meta `consolidated.*.pth` state dict loads with
no renaming. This file holds the model only: no training, parallelism or I/O code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llamafoundry.config import ModelConfig, RopeScaling


# Pre-normalisation [GPT3]: the input of each sub-layer is normalised with RMSNorm (Zhang & Sennrich, 2019).
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 even under bf16, then scale in the input dtype, as Meta's reference does.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return normed.type_as(x) * self.weight


# Rotary embeddings [GPTNeo]: each pair of channels (2i, 2i+1) of a query or key is rotated by an angle
# proportional to its position (Su et al., 2021). Meta's code pairs *adjacent* channels; Hugging Face's
# pairs the two halves, which is why converting to and from HF permutes the rows of wq and wk.
def precompute_freqs_cis(
    head_dim: int, end: int, theta: float = 10000.0, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * theta^(-2i/head_dim), each of shape [end, head_dim // 2], in float32;
    the frequencies stretched by Llama 3.1's `scaling` when given."""
    angles = torch.outer(torch.arange(end, dtype=torch.float32), rope_freqs(head_dim, theta, scaling))
    return angles.cos(), angles.sin()


def rope_freqs(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> torch.Tensor:
    """The rotary frequencies theta^(-2i/head_dim) [head_dim // 2], stretched by `scaling` when given."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    return freqs if scaling is None else scale_freqs(freqs, scaling)


def scale_freqs(freqs: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    """Llama 3.1's rotary scaling, as Meta's `apply_scaling`: long wavelengths slowed by `factor`, short
    ones kept, the band between interpolated smoothly."""
    original = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / freqs
    slowed = torch.where(wavelen > original / scaling.low_freq_factor, freqs / scaling.factor, freqs)
    smooth = (original / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    between = (wavelen >= original / scaling.high_freq_factor) & (
        wavelen <= original / scaling.low_freq_factor
    )
    return torch.where(between, (1 - smooth) * slowed / scaling.factor + smooth * slowed, slowed)


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, T, H, D] by the angles in cos/sin [B or 1, T, D/2].

    Each pair is a complex number multiplied by e^(i * angle), as in Meta's code: one kernel in eager
    mode. Inductor generates no code for complex numbers, so under torch.compile the same product is
    written with reals, which it fuses into one kernel.
    """
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # broadcast over heads
    pairs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        real, imag = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.complex(cos, sin))
    return rotated.flatten(-2).type_as(x)


class KVCache(nn.Module):
    """Keys and values of the tokens seen so far, preallocated for `max_seq_len` positions."""

    def __init__(
        self,
        batch: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def rows(self, batch: int) -> KVCache:
        """A cache for the first `batch` sequences that shares this one's memory."""
        view = KVCache(batch, self.k.shape[2], self.k.shape[1], self.k.shape[3], self.k.dtype, "meta")
        view.k, view.v = self.k[:batch], self.v[:batch]
        return view

    def update(
        self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, H_kv, T, D] at positions `pos` [T]; return the cache's first `span` positions
        (default: all of them), the keys and values attention reads."""
        self.k.index_copy_(2, pos, k.to(self.k.dtype))
        self.v.index_copy_(2, pos, v.to(self.v.dtype))
        if span is None:
            return self.k, self.v
        return self.k[:, :, :span], self.v[:, :, :span]


# Causal self-attention computed by a fused kernel (Sec. 2.4): scaled_dot_product_attention picks the
# flash / memory-efficient kernel that neither stores the attention weights nor computes masked scores.
class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        # Head counts come from the tensors, so a tensor-parallel shard of wq/wk/wv runs this code unchanged.
        q = self.wq(x).view(batch, seqlen, -1, self.head_dim)
        k = self.wk(x).view(batch, seqlen, -1, self.head_dim)
        v = self.wv(x).view(batch, seqlen, -1, self.head_dim)
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if self.cache is not None:
            # Attention reads the cache positions the mask covers; no mask means a causal call from
            # position 0 (see Transformer.hidden), which reads the positions it writes. A call that
            # reads only what it writes (a prefill) attends over its own keys and values, not the
            # cache's copies, which may be 16-bit: prompt logits stay exact.
            span = seqlen if mask is None else mask.shape[-1]
            cached = self.cache.update(pos, k, v, span=span)
            if span != seqlen:
                k, v = cached
        out = self.attend(q, k, v, mask)
        return self.wo(out.transpose(1, 2).reshape(batch, seqlen, -1))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(head_dim) + mask) v for q [B, H, T, D] and k, v [B, H_kv, S, D].

        Grouped-query attention (Llama-2 70B): each key/value head serves n_heads / n_kv_heads query heads.
        A KV cache may hold keys and values in 16 bits (decoding does by default); attention runs in q's dtype.
        """
        k, v = k.type_as(q), v.type_as(q)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=q.shape[1] != k.shape[1]
        )


# SwiGLU (Shazeer, 2020) replaces the ReLU feed-forward, with 2/3 * 4d hidden units instead of 4d.
class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down projection
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_hidden_dim)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, pos, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """`Transformer(cfg)(tokens[B, T], start_pos=0) -> logits[B, T, vocab_size]`.

    Decoding: `setup_cache(batch, max_seq_len)` preallocates a KV cache; each call then writes its keys
    and values at positions `start_pos .. start_pos + T` and attends to everything before them.
    `positions` (rotary positions per row, [B, T]) and `mask` (a boolean attention mask broadcastable
    to [B, 1, T, S]) serve batches of prompts of different lengths; by default rotary positions are the
    cache positions and attention is causal.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, cfg) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # one table reads tokens in and scores them out (Press & Wolf, 2017)
            self.output.weight = self.tok_embeddings.weight
        # Tables for positions up to max_seq_len; kept out of the state dict, as Meta's freqs_cis is.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise parameters and rotary tables (also after materialising a meta-device model).

        The paper does not state its initialisation. We use the GPT-2 scheme, as nanoGPT does:
        N(0, 0.02) for embeddings and matrices, with the two projections that write into the residual
        stream (wo, w2) scaled down by 1/sqrt(2 * n_layers) so the stream's variance does not grow
        with depth; RMSNorm gains start at 1.
        """
        std = 0.02
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(param, mean=0.0, std=std)
        self.reset_rope()

    def reset_rope(self) -> None:
        """(Re)compute the rotary tables on the device of the weights, in float32 (computed on the CPU;
        a model on the meta device, a shape without memory, gets tables of shapes alone)."""
        cfg = self.cfg
        device = self.tok_embeddings.weight.device
        with torch.device("meta" if device.type == "meta" else "cpu"):
            cos, sin = precompute_freqs_cis(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Transformer:
        """`.to(dtype)`, `.bfloat16()` and friends cast the weights; the rotary tables stay float32, as
        Meta's freqs_cis does (eager rotary multiplies complex numbers, which bfloat16 has not)."""
        super()._apply(fn, recurse)
        if self.rope_cos.dtype != torch.float32:
            self.reset_rope()
        return self

    def setup_cache(
        self, batch: int, max_seq_len: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Preallocate a KV cache for `batch` sequences of up to `max_seq_len` tokens.

        It holds one position more than a sequence fills: the span attention reads is then always a
        strict prefix of the cache, which keeps its length dynamic in a compiled decode step (a slice as
        long as the whole cache is contiguous, which torch.compile would specialise on).
        """
        max_seq_len = max_seq_len or self.cfg.max_seq_len
        if max_seq_len > self.cfg.max_seq_len:
            raise ValueError(f"cache of {max_seq_len} positions exceeds max_seq_len {self.cfg.max_seq_len}")
        weight = self.tok_embeddings.weight
        shape = (batch, max_seq_len + 1, self.cfg.kv_heads, self.cfg.head_dim)
        for layer in self.layers:
            layer.attention.cache = KVCache(*shape, dtype or weight.dtype, weight.device)

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.attention.cache = None

    def hidden(
        self,
        tokens: torch.Tensor,
        start_pos: int | torch.Tensor = 0,
        *,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normalised hidden states [B, T, dim], before the output projection."""
        seqlen = tokens.shape[1]
        pos = torch.arange(seqlen, device=tokens.device) + start_pos
        rope_pos = pos.unsqueeze(0) if positions is None else positions
        cos, sin = self.rope_cos[rope_pos], self.rope_sin[rope_pos]
        cache = self.layers[0].attention.cache if len(self.layers) else None
        if cache is not None and mask is None and not (isinstance(start_pos, int) and start_pos == 0):
            # Causal: key j is visible to the query at position p iff j <= p. A tensor start_pos (a
            # compiled step's) keeps shapes static with a mask over the whole cache; attention reads the
            # keys the mask covers. From position 0 no mask is needed: SDPA's causal kernel runs.
            span = cache.k.shape[2] if isinstance(start_pos, torch.Tensor) else start_pos + seqlen
            mask = torch.arange(span, device=tokens.device) <= pos.unsqueeze(-1)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, pos, mask)
        return self.norm(h)

    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int | torch.Tensor = 0,
        *,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.output(self.hidden(tokens, start_pos, positions=positions, mask=mask))
