"""Batches of fixed-length windows from token shards: mixed by source weight, deterministic, resumable.

The order of samples is a pure function of (seed, weights, shard sizes), computed identically on every
rank, so that:
- data-parallel ranks take disjoint slices of each global batch (rank r: the r-th 1/world of it);
- a run resumed from a saved position sees exactly the batches an uninterrupted run would, also on a
  different number of ranks, as long as the global batch is the same;
- mixing follows the weights exactly over any stretch of samples (smooth weighted round-robin), and a
  source that runs out starts its next epoch in a fresh random order (Table 1's epochs > 1).

Within a source, window i covers stream tokens [i*L, i*L + L + 1): inputs are its first L tokens and
targets its last L. Window order per epoch is a keyed Feistel permutation, O(1) memory at any scale.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llamafoundry.data.mixture import PAPER_MIXTURE
from llamafoundry.data.shards import open_shard, read_manifest
from llamafoundry.errors import UserError

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def permute(index: int, n: int, key: int, rounds: int = 4) -> int:
    """The image of `index` under a pseudo-random permutation of range(n) chosen by `key`."""
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = (1 << half) - 1
    x = index
    while True:  # cycle-walk: the Feistel network permutes range(4**half) >= n
        left, right = x >> half, x & mask
        for r in range(rounds):
            left, right = right, left ^ (_splitmix64(right ^ _splitmix64(key * rounds + r)) & mask)
        x = (left << half) | right
        if x < n:
            return x


class _SourceStream:
    """One source's shards as one token stream, cut into windows of L + 1 tokens."""

    def __init__(self, folder: Path, shards: list[dict], dtype: np.dtype, seq_len: int, verify: bool) -> None:
        self.arrays = [open_shard(folder, shard, dtype, verify) for shard in shards]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.seq_len = seq_len
        self.windows = max(0, (int(self.starts[-1]) - 1) // seq_len)

    def window(self, i: int) -> np.ndarray:
        begin, end = i * self.seq_len, i * self.seq_len + self.seq_len + 1
        first = int(np.searchsorted(self.starts, begin, side="right")) - 1
        parts, pos = [], begin
        for a, start in zip(self.arrays[first:], self.starts[first:-1], strict=False):
            if pos >= end:
                break
            take = a[pos - start : min(end, start + len(a)) - start]
            parts.append(take)
            pos += len(take)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


@dataclass
class LoaderState:
    """Where the loader stands: samples drawn so far, per source, and the round-robin credits."""

    sample: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    credits: dict[str, float] = field(default_factory=dict)


class TokenLoader:
    """Yields this rank's micro-batches of one optimizer step: a tensor [accum, micro_batch, seq_len + 1].

    The global batch of a step is `micro_batch * accum * world_size` windows; changing the world size
    while keeping that product keeps the sample order.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        seq_len: int,
        micro_batch: int,
        *,
        split: str = "train",
        accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        verify: bool = True,
    ) -> None:
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if split not in manifest["splits"]:
            raise UserError(f"{self.folder} has no '{split}' split")
        shards = {src: s for src, s in manifest["splits"][split].items() if s}
        self.weights = _resolve_weights(weights, shards, split)
        dtype = np.dtype(manifest["dtype"])
        self.sources = {
            src: _SourceStream(self.folder, shards[src], dtype, seq_len, verify) for src in self.weights
        }
        empty = [src for src, stream in self.sources.items() if stream.windows == 0]
        for src in empty:  # a tiny source cannot fill one window (happens in small validation splits)
            del self.sources[src], self.weights[src]
        if not self.sources:
            raise UserError(
                f"{self.folder} '{split}' split holds fewer than {seq_len + 1} tokens per source: "
                "too little data for this sequence length"
            )
        total = sum(self.weights.values())
        self.weights = {src: w / total for src, w in self.weights.items()}
        self.seq_len, self.micro_batch, self.accum = seq_len, micro_batch, accum
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.vocab_size = manifest["vocab_size"]
        self.state = LoaderState(
            counts=dict.fromkeys(self.sources, 0), credits=dict.fromkeys(self.sources, 0.0)
        )

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accum * self.world_size

    def _next_source(self) -> str:
        """Smooth weighted round-robin: every source earns its weight, the richest one is drawn."""
        credits = self.state.credits
        for src, w in self.weights.items():
            credits[src] += w
        chosen = max(credits, key=credits.__getitem__)
        credits[chosen] -= 1.0
        return chosen

    def _next_window(self) -> np.ndarray:
        src = self._next_source()
        stream, count = self.sources[src], self.state.counts[src]
        epoch, index = divmod(count, stream.windows)
        key = _stable_hash(f"{self.seed}/{src}/{epoch}")
        self.state.counts[src] = count + 1
        self.state.sample += 1
        return stream.window(permute(index, stream.windows, key))

    def next_step(self) -> torch.Tensor:
        """This rank's share of the next global batch, as int64 [accum, micro_batch, seq_len + 1]."""
        per_rank = self.micro_batch * self.accum
        mine = []
        for position in range(self.global_batch):
            window = self._next_window()
            if self.rank * per_rank <= position < (self.rank + 1) * per_rank:
                mine.append(window)
        batch = torch.from_numpy(np.stack(mine).astype(np.int64))
        return batch.view(self.accum, self.micro_batch, self.seq_len + 1)

    def epochs(self) -> dict[str, float]:
        """Passes made over each source so far (Table 1's epochs column, as it accrues)."""
        return {src: self.state.counts[src] / s.windows for src, s in self.sources.items()}

    def state_dict(self) -> dict:
        return {
            "sample": self.state.sample,
            "counts": dict(self.state.counts),
            "credits": dict(self.state.credits),
            "global_batch": self.global_batch,
            "seed": self.seed,
            "weights": dict(self.weights),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["global_batch"] != self.global_batch:
            raise UserError(
                f"the checkpoint's data loader drew global batches of {state['global_batch']} windows, "
                f"this run {self.global_batch}: keep batch_tokens and seq_len when resuming"
            )
        if set(state["counts"]) != set(self.sources) or state["seed"] != self.seed:
            raise UserError(
                "the checkpoint was trained on other data sources or another seed; resume with the same "
                "data and seed"
            )
        self.state = LoaderState(state["sample"], dict(state["counts"]), dict(state["credits"]))


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _resolve_weights(
    weights: dict[str, float] | None, shards: dict[str, list], split: str
) -> dict[str, float]:
    """Explicit weights, else Table 1's for the paper's sources and token share for any other source."""
    if not shards:
        raise UserError(f"the '{split}' split has no shards")
    if weights is not None:
        unknown = sorted(set(weights) - set(shards))
        if unknown and split == "train":
            raise UserError(f"mixture names sources {unknown} that the shards do not have ({sorted(shards)})")
        return {src: float(w) for src, w in weights.items() if src in shards and w > 0}
    tokens = {src: sum(s["tokens"] for s in shard_list) for src, shard_list in shards.items()}
    if all(src in PAPER_MIXTURE for src in shards):
        return {src: PAPER_MIXTURE[src].weight for src in shards}
    return {src: float(n) for src, n in tokens.items()}
