"""Finetuning recipes: training's sections (train, eval, checkpoint, output, parallel, footprint) with
a finetune's own [data] and [lora]; the model's shape is the base model's, so there is no [model].

The default is a small recipe in the spirit of LLaMA-I (Sec. 4: "a very small amount of finetuning"),
with the settings of Llama-2's supervised finetuning (Touvron et al., 2023b, Sec. 3.1): peak learning
rate 2e-5, cosine decay, weight decay 0.1, 64 examples a step, 2 epochs; the paper's AdamW betas and
clipping. Warmup is training's rule (5% of a short run; Alpaca used 3%). On Alpaca's 5,000 examples
that is about 150 steps. configs/finetune.toml spells the same recipe out. A model of a few million
parameters learns too slowly at 2e-5: such tiny models take --train.lr 1e-3 or so.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import ClassVar

from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.finetune.data import FORMATS
from llamafoundry.train.recipe import (
    EvalSection,
    OutputSection,
    RunRecipe,
    TrainSection,
    _at_least,
    _Section,
    _within,
    load_run_recipe,
)

ROWS_PER_STEP, SEQ_LEN = 64, 512


@dataclass
class FinetuneDataSection(_Section):
    """The instruction files, how they are cut into rows, and the held-out split."""

    name: ClassVar[str] = "data"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"format": FORMATS}
    files: list[str] = field(default_factory=list)  # JSON / JSONL (gzipped or not); --data sets them
    format: str = "auto"  # auto | alpaca | chat | prompt_completion
    seq_len: int = SEQ_LEN  # tokens per row: longer examples are cut, shorter ones padded
    held_out: int = 100  # conversations kept out of training for the held-out loss
    epochs: float = 2.0  # passes over the training examples, unless train.steps/tokens/max_minutes is set
    template: str = ""  # a Jinja chat template file; empty: the base model's own, else LLaMA-2's

    def _problem(self) -> str | None:
        return (
            _at_least("seq_len", self.seq_len, 1)
            or _at_least("held_out", self.held_out, 1)
            or _within("epochs", self.epochs, 0, math.inf, "(0, inf)")
        )


@dataclass
class LoraSection(_Section):
    """Low-rank adapters (Hu et al., 2021) in place of full finetuning: rank 0 trains every weight. The
    other fields are finetune/lora.py's LoraConfig (its defaults: every linear layer of the blocks);
    `merge` also writes `model/`, the base with the adapters folded in, beside `adapters/`."""

    name: ClassVar[str] = "lora"
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo", "w1", "w2", "w3"])
    merge: bool = False

    def _problem(self) -> str | None:
        problem = _at_least("rank", self.rank, 0, " (0: full finetuning)")
        if problem or not self.rank:
            return problem
        try:
            self.config()
        except UserError as exc:
            return str(exc).removeprefix("invalid LoRA config: ")
        return None

    def config(self):
        """The adapters this section asks for (finetune/lora.py's LoraConfig)."""
        from llamafoundry.finetune.lora import LoraConfig

        return LoraConfig(rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=tuple(self.targets))


@dataclass
class FinetuneRecipe(RunRecipe):
    """A RunRecipe whose model is the base model's and whose data are instruction files."""

    model: dict = field(default_factory=dict)  # filled from the base model (`with_base`)
    data: FinetuneDataSection = field(default_factory=FinetuneDataSection)
    train: TrainSection = field(
        default_factory=lambda: TrainSection(
            batch_tokens=ROWS_PER_STEP * SEQ_LEN, micro_batch=8, lr=2.0e-5, weight_decay=0.1
        )
    )
    eval: EvalSection = field(default_factory=lambda: EvalSection(every=0, at_start=True))
    output: OutputSection = field(default_factory=lambda: OutputSection(dir="runs/finetune"))
    lora: LoraSection = field(default_factory=LoraSection)

    def with_base(self, base: ModelConfig) -> FinetuneRecipe:
        """This recipe on `base`'s shape; a [model] setting that differs from it is a UserError."""
        wanted = base.to_dict()
        differ = sorted(k for k, v in self.model.items() if k == "preset" or wanted.get(k) != v)
        if differ:
            raise UserError(
                f"model.{differ[0]} is set, but a finetune keeps its base model's shape; drop the [model] settings"
            )
        return dataclasses.replace(self, model=wanted)


def load_finetune_recipe(
    path: str | os.PathLike | None, overrides: list[str] | None = None
) -> FinetuneRecipe:
    """A FinetuneRecipe from a TOML file (None: the defaults, which configs/finetune.toml spells out)
    with `--section.key value` overrides applied."""
    return load_run_recipe(path, overrides, kind=FinetuneRecipe)


def validate(recipe: FinetuneRecipe) -> None:
    """What a finetune needs before it reads its data: files given, its own sections sound (the Trainer
    checks training's sections when it starts); a UserError names the fix."""
    if not recipe.data.files:
        raise UserError("no instruction files: pass --data FILE (JSON or JSONL, gzipped or not)")
    recipe.data.check()
    recipe.lora.check()
