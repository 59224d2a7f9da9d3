"""Instruction finetuning (Sec. 4, LLaMA-I): the pretraining Trainer on instruction examples.

`finetune(base, recipe)` loads any model folder `load_model` reads, renders the instruction files with
the chat template (finetune/template.py) into padded rows whose loss is on the replies only
(finetune/batches.py), and runs the Trainer from the base weights (`init_state`) on them (`data`):
checkpoints, resume, SIGINT, metrics.jsonl, loss_curve.png and report.md are training's. The held-out
loss and the recipe's `eval.tasks` are measured before the first step and after the last; the report
sets them beside the paper's MMLU 63.4 -> 68.9. `model/` is a model folder carrying the template.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from llamafoundry import fileio
from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.config import ModelConfig
from llamafoundry.data.loader import permute
from llamafoundry.errors import UserError
from llamafoundry.finetune.batches import ExampleLoader, fit_examples
from llamafoundry.finetune.data import read_conversations
from llamafoundry.finetune.recipe import FinetuneRecipe, validate
from llamafoundry.finetune.template import choose_template, examples_of
from llamafoundry.inference.chat import ChatTemplate
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.train import parallel
from llamafoundry.train.benchmarks import benchmark_keys
from llamafoundry.train.distributed import init_runtime, shutdown
from llamafoundry.train.metrics import read_metrics
from llamafoundry.train.trainer import Trainer, TrainResult

# Sec. 4: MMLU (5-shot) of LLaMA-65B and of LLaMA-I, its instruction-finetuned version (Table 10).
PAPER_MMLU = (63.4, 68.9)


class InstructionData:
    """A finetune's `TrainData`: its conversations as rows of tokens and reply targets, with `held_out`
    conversations (drawn by the seed) kept for the held-out loss."""

    def __init__(self, recipe: FinetuneRecipe, tokenizer: Tokenizer, template: ChatTemplate) -> None:
        data = recipe.data
        conversations = read_conversations(data.files, data.format)
        if len(conversations) <= data.held_out:
            raise UserError(
                f"the instruction files hold {len(conversations)} conversations and data.held_out is "
                f"{data.held_out}, which leaves none to train on; lower data.held_out"
            )
        # The split is by conversation, so no held-out turn has its history in training.
        order = [permute(i, len(conversations), key=recipe.train.seed) for i in range(len(conversations))]
        held = [conversations[i] for i in order[: data.held_out]]
        train = [conversations[i] for i in order[data.held_out :]]
        self.train, cut_train = fit_examples(examples_of(train, template, tokenizer), data.seq_len)
        self.val, cut_val = fit_examples(examples_of(held, template, tokenizer), data.seq_len)
        self.dropped = cut_train + cut_val
        if not self.train or not self.val:
            raise UserError(
                f"every {'training' if not self.train else 'held-out'} example's prompt is longer than "
                f"data.seq_len {data.seq_len}; raise data.seq_len"
            )
        self.conversations = len(conversations)
        self.recipe, self.tokenizer, self.template = recipe, tokenizer, template
        self.name = ", ".join(Path(f).name for f in data.files)

    def check(self, model_cfg: ModelConfig) -> None:
        if self.recipe.data.seq_len > model_cfg.max_seq_len:
            raise UserError(
                f"data.seq_len {self.recipe.data.seq_len} exceeds the model's max_seq_len "
                f"{model_cfg.max_seq_len}; lower data.seq_len"
            )

    def loader(self, split: str, micro: int, accum: int, rank: int, world_size: int) -> ExampleLoader:
        examples = self.train if split == "train" else self.val
        return ExampleLoader(
            examples,
            self.recipe.data.seq_len,
            self.tokenizer.eos_id,  # any id: padding takes no loss and, after the example, is never attended
            micro,
            accum=accum,
            rank=rank,
            world_size=world_size,
            seed=self.recipe.train.seed,
            shuffle=split == "train",
        )

    def fill(self, recipe: FinetuneRecipe) -> FinetuneRecipe:
        """The recipe with what follows from the data: steps for `data.epochs` when no duration is set,
        and validation batches that cover the held-out examples once (on one rank)."""
        train = recipe.train
        if not (train.steps or train.tokens or train.max_minutes):
            rows = max(1, train.batch_tokens // recipe.data.seq_len)
            steps = max(1, math.ceil(recipe.data.epochs * len(self.train) / rows))
            train = dataclasses.replace(train, steps=steps)
        batches = math.ceil(len(self.val) / train.micro_batch)
        return dataclasses.replace(
            recipe, train=train, eval=dataclasses.replace(recipe.eval, batches=batches)
        )


def adapter_hook(recipe: FinetuneRecipe):
    """What adds the `[lora]` adapters to a freshly built model (finetune/lora.py), or None for full
    finetuning (lora.rank 0); a UserError for a layout LoRA cannot take."""
    if not recipe.lora.rank:
        return None
    if recipe.parallel.tp > 1:
        raise UserError(
            f"lora.rank {recipe.lora.rank} with parallel.tp {recipe.parallel.tp}: tensor parallelism shards "
            "plain linear layers only; use parallel.tp = 1 (FSDP shards LoRA models) or lora.rank = 0"
        )
    from llamafoundry.finetune.lora import add_lora

    config = recipe.lora.config()
    return lambda model: add_lora(model, config)


class FinetuneTrainer(Trainer):
    """The Trainer on instruction data, whose model folder carries the chat template and whose report
    has the finetune's before/after measurements."""

    def __init__(self, recipe: FinetuneRecipe, data: InstructionData, base: str, **kwargs) -> None:
        super().__init__(recipe, data=data, **kwargs)
        self.base = base

    def export(self) -> None:
        """`output.dir/model`, a model folder with the chat template in its tokenizer_config.json; with
        LoRA, `output.dir/adapters` (PEFT's format), and `model/` (adapters merged) when `lora.merge`."""
        if getattr(self.model, "lora", None) is not None:
            self._export_adapters()
            return
        self._save(parallel.gather_model(self.model, self.model_cfg))

    def _save(self, model: Transformer | None) -> None:
        if model is not None:
            template = self.data.template.jinja
            save_model(self.out / "model", model, self.data.tokenizer, overwrite=True, chat_template=template)

    def _export_adapters(self) -> None:
        """Collective, like `gather_model`: every rank gathers the adapters (and, to merge, the weights)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from llamafoundry.checkpoint.common import build_model
        from llamafoundry.finetune.lora import adapter_state_dict, merged_state_dict, save_adapters

        adapters = adapter_state_dict(self.model)
        full = None
        if self.recipe.lora.merge:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_model_state_dict(self.model, options=options)
        if not self.rt.is_main:
            return
        save_adapters(
            self.out / "adapters", self.model, adapters=adapters, base_model=self.base, overwrite=True
        )
        if full is not None:
            merged = merged_state_dict(full, self.model.lora)
            self._save(build_model(self.model_cfg, merged, "the merged LoRA model").eval())

    def report(self, result: TrainResult) -> None:
        """Training's report.md, then the finetune's section: held-out loss and benchmarks before/after."""
        super().report(result)
        if self.rt.is_main:
            path = self.out / "report.md"
            lines = finetune_lines(
                read_metrics(self.out / "metrics.jsonl"), self.base, self.data, self.recipe
            )
            fileio.write_text(path, path.read_text(encoding="utf-8") + "\n" + "\n".join(lines) + "\n")


def _lora_line(recipe: FinetuneRecipe) -> str:
    lora = recipe.lora
    if not lora.rank:
        return "- full finetuning: every weight trained; the model folder is `model/`"
    merged = (
        "; merged into `model/`"
        if lora.merge
        else "; `--merge` (lora.merge) also writes them merged into `model/`"
    )
    return (
        f"- LoRA rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g} on {', '.join(lora.targets)}: "
        f"only the adapters trained, saved alone in `adapters/` (PEFT's format){merged}"
    )


def finetune_lines(
    records: list[dict], base: str, data: InstructionData, recipe: FinetuneRecipe
) -> list[str]:
    """The report's section: the held-out loss on the replies and each benchmark score, first validation
    (before finetuning) against the last, beside the paper's MMLU."""
    before, after = before_after(records)
    lines = [
        "## Instruction finetuning (Sec. 4, LLaMA-I)",
        "",
        f"- base model: {base}; data: {data.name}: {data.conversations:,} conversations, "
        f"{len(data.train):,} training examples, {len(data.val):,} held out"
        + (f", {data.dropped:,} dropped (prompt longer than data.seq_len)" if data.dropped else ""),
        "- the loss is on the reply tokens only; rows are padded, not packed (finetune/batches.py)",
        _lora_line(recipe),
        "",
        "| measure | before | after | paper (LLaMA-65B -> LLaMA-I) |",
        "| --- | --- | --- | --- |",
        f"| held-out loss (replies) | {_cell(before, 'loss')} | {_cell(after, 'loss')} | - |",
    ]
    for key in benchmark_keys(after):
        paper = f"{PAPER_MMLU[0]} -> {PAPER_MMLU[1]}" if key.startswith("eval/mmlu/") else "-"
        lines.append(
            f"| {key.removeprefix('eval/')} | {_cell(before, key)} | {_cell(after, key)} | {paper} |"
        )
    if not benchmark_keys(after):
        lines.append("")
        lines.append("No benchmarks ran: --tasks mmlu,gsm8k --limit N (eval.tasks) adds them.")
    return lines


def before_after(records: list[dict]) -> tuple[dict, dict]:
    """The validation records before the first step and after the last ({} where there is none)."""
    val = [r for r in records if r.get("kind") == "val"]
    before = val[0] if val and val[0]["step"] == 0 else {}
    return before, (val[-1] if val and val[-1] is not before else {})


def _cell(record: dict, key: str) -> str:
    value = record.get(key)
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def finetune(
    base: str | os.PathLike, recipe: FinetuneRecipe, *, resume: bool = False, device: str | None = None
) -> TrainResult:
    """Finetune the model at `base` as `recipe` says (resume: continue in output.dir)."""
    validate(recipe)
    model, tokenizer, cfg = load_model(base)
    if tokenizer is None:
        raise UserError(
            f"{base} has no tokenizer (tokenizer.model or tokenizer.json); a finetune renders its examples with the model's tokenizer"
        )
    recipe = recipe.with_base(cfg)
    template = choose_template(base, recipe.data.template, tokenizer)
    data = InstructionData(recipe, tokenizer, template)
    recipe = data.fill(recipe)
    adapt = adapter_hook(recipe)
    if adapt is not None:
        torch.manual_seed(recipe.train.seed)  # the adapters' initial A: the same on every rank, every run
        adapt(model)  # the init_state then names the adapted model's tensors, adapters included
    init_state = model.state_dict()
    runtime = init_runtime(device=device)
    try:
        trainer = FinetuneTrainer(
            recipe, data, str(base), runtime=runtime, resume=resume, init_state=init_state, adapt=adapt
        )
        return trainer.fit()
    finally:
        shutdown(runtime)
