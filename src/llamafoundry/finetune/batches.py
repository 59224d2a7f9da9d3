"""Examples to training batches: padding, not packing; the loss on the replies only (Sec. 4).

Each example is one row of `seq_len + 1` tokens, cut there when longer and padded after its end when
shorter. Rows are [2, seq_len + 1]: the tokens, and the targets, which are IGNORE_INDEX on the prompt
and the padding, so `train.loss.lm_loss` takes the loss on the reply's tokens alone.

Why padding: model.py's attention is causal and takes no mask in training, so a row's tokens never see
the padding after them, and the fused attention kernels, tensor parallelism and torch.compile run as in
pretraining. Packing several examples in a row would need a block-diagonal mask with the rotary
positions reset per example, which none of those paths pass today. The padded positions cost compute;
`data.seq_len` near the examples' length keeps that small.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llamafoundry.data.loader import permute
from llamafoundry.errors import UserError
from llamafoundry.finetune.template import Example
from llamafoundry.train.loss import IGNORE_INDEX


def fit_examples(examples: Sequence[Example], seq_len: int) -> tuple[list[Example], int]:
    """The examples cut to `seq_len + 1` tokens that keep at least one reply token, and how many did
    not (their prompt alone fills the row)."""
    kept = [Example(e.tokens[: seq_len + 1], e.prompt_len) for e in examples if e.prompt_len <= seq_len]
    return kept, len(examples) - len(kept)


def pad_rows(examples: Sequence[Example], seq_len: int, pad_id: int) -> torch.Tensor:
    """int64 [len(examples), 2, seq_len + 1]: each example's tokens, padded with `pad_id`, and its
    targets (the tokens on the reply, IGNORE_INDEX elsewhere)."""
    rows = torch.full((len(examples), 2, seq_len + 1), IGNORE_INDEX, dtype=torch.int64)
    rows[:, 0] = pad_id
    for row, example in zip(rows, examples, strict=True):
        tokens = torch.tensor(example.tokens[: seq_len + 1], dtype=torch.int64)
        row[0, : len(tokens)] = tokens
        row[1, example.prompt_len : len(tokens)] = tokens[example.prompt_len :]
    return rows


class ExampleLoader:
    """This rank's rows of each optimizer step, [accum, micro, 2, seq_len + 1]; resumable.

    Training rows come in a fresh order each epoch, a pure function of (seed, epoch, number of
    examples), as `TokenLoader` draws windows: a resumed run sees the batches an uninterrupted one
    would. Held-out rows (`shuffle=False`) come in file order, from the first, at each validation.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        seq_len: int,
        pad_id: int,
        micro: int,
        *,
        accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not examples:
            raise UserError("no examples for this split")
        self.examples, self.seq_len, self.pad_id = list(examples), seq_len, pad_id
        self.micro, self.accum, self.rank, self.world_size = micro, accum, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.sample = 0  # rows drawn so far, by every rank together

    @property
    def global_batch(self) -> int:
        return self.micro * self.accum * self.world_size

    def _example(self, i: int) -> Example:
        epoch, index = divmod(i, len(self.examples))
        if self.shuffle:
            index = permute(index, len(self.examples), key=self.seed * 1_000_003 + epoch)
        return self.examples[index]

    def next_step(self) -> torch.Tensor:
        """This rank's share of the next global batch, int64 [accum, micro, 2, seq_len + 1]."""
        per_rank = self.micro * self.accum
        first = self.sample + self.rank * per_rank
        rows = pad_rows([self._example(first + k) for k in range(per_rank)], self.seq_len, self.pad_id)
        self.sample += self.global_batch
        return rows.view(self.accum, self.micro, 2, self.seq_len + 1)

    def state_dict(self) -> dict:
        return {
            "sample": self.sample,
            "examples": len(self.examples),
            "global_batch": self.global_batch,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        changed = [key for key in ("examples", "global_batch", "seed") if state.get(key) != mine[key]]
        if changed:
            raise UserError(
                f"the checkpoint was trained with other {', '.join(changed)} ({state.get(changed[0])} "
                f"against {mine[changed[0]]} now); resume with the same data, batch and seed"
            )
        self.sample = state["sample"]
