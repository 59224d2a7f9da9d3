"""Evaluation during training (the paper's Figure 2): the `[eval] tasks` benchmarks on the live model.

`BenchmarkHook` is an `on_validate` hook: at every validation it scores the recipe's tasks with the
evaluation suite (`eval/evaluator.py`, `LlamaFoundryLM`: the protocols, batching and seed of
`llamafoundry eval`), so a checkpoint folder of the same step, evaluated by that command, scores the same.
Each metric joins the validation record as `eval/<task>/<metric>`, and rank 0 redraws
`benchmarks_curve.png` (score against tokens seen) in the run folder.

A sharded (FSDP) model runs the same forward passes on every rank, since each one all-gathers weights
from the others: every rank scores every example. Generating text needs a KV cache in a copy of the
model, which a sharded model cannot give, so with several ranks only likelihood-scored tasks run.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.eval.evaluator import evaluate
from llamafoundry.eval.lm import LM, LlamaFoundryLM
from llamafoundry.eval.tasks import resolve_tasks
from llamafoundry.eval.tasks.base import RunConfig, Task
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.train.metrics import read_metrics
from llamafoundry.train.recipe import EvalSection

if TYPE_CHECKING:
    from llamafoundry.train.parallel import Layout

PREFIX = "eval/"  # validation-record keys of benchmark scores: eval/<task>/<metric>
CURVE = "benchmarks_curve.png"
SCORING_TOKENS = 8192  # padded tokens per scoring batch: `llamafoundry eval --batch-tokens`'s default


class BenchmarkHook:
    """Scores `section.tasks` at each validation; the tasks are checked (files, and whether they
    generate, which a sharded model cannot) when the hook is built, before training starts."""

    def __init__(self, section: EvalSection, tokenizer: Tokenizer, layout: Layout) -> None:
        self.section, self.tokenizer = section, tokenizer
        if layout.tp > 1:
            raise UserError(
                "eval.tasks need parallel.tp = 1: scoring runs the model on packed rows that tensor "
                "parallelism does not split; evaluate checkpoint folders with `llamafoundry eval` instead"
            )
        self.tasks = resolve_tasks(",".join(section.tasks))
        self.data_dir = Path(section.data_dir) if section.data_dir else None
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise UserError(f"eval.data_dir {self.data_dir} is not a folder")
        self.shots = None if section.shots < 0 else section.shots
        self.config = RunConfig(shots=self.shots, limit=section.limit or None, seed=section.seed)
        generating = [t.name for t in self.tasks if _generates(t, self.data_dir, self.config)]
        if layout.mesh is not None and generating:
            raise UserError(
                f"eval.tasks {', '.join(generating)} generate text, which a model sharded over ranks "
                "cannot do during training; drop them here and run `llamafoundry eval` on a checkpoint "
                "folder (runs/X/checkpoints/step_N) instead"
            )

    def __call__(self, trainer: Any, step: int, record: dict) -> dict:
        """`eval/<task>/<metric>` for every metric of every task; a task that fails ends the run.
        (`trainer` is the `train.trainer.Trainer`, which imports this module.)"""
        model = trainer.model
        _register_hidden(model)
        lm = LlamaFoundryLM(
            model, self.tokenizer, batch_tokens=SCORING_TOKENS, max_batch=self.section.batch_size
        )
        results = evaluate(lm, self.tasks, self.data_dir, self.config, shots=(self.shots,))
        failed = [r for r in results if r.error]
        if failed:
            raise UserError(f"eval.tasks: {failed[0].task} could not run at step {step}: {failed[0].error}")
        scores = {
            f"{PREFIX}{r.task}/{name}": float(value)
            for r in results
            for name, value in r.metrics.items()
            if isinstance(value, (int, float))
        }
        if trainer.rt.is_main:
            history = _val_records(trainer.out / "metrics.jsonl", step)
            plot_benchmarks([*history, {**record, **scores}], trainer.out / CURVE)
        return scores


def benchmark_keys(record: dict) -> list[str]:
    """The benchmark scores of a validation record, in the order they were logged."""
    return [k for k in record if k.startswith(PREFIX) and isinstance(record[k], (int, float))]


def plot_benchmarks(records: list[dict], path: Path) -> None:
    """Each benchmark metric of the validation `records` against tokens seen, one line each, as a PNG
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [r for r in records if r.get("kind") == "val"]
    keys = list(dict.fromkeys(k for r in val for k in benchmark_keys(r)))
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, key in enumerate(keys):
        points = [(r["tokens"], r[key]) for r in val if key in r and math.isfinite(r[key])]
        if points:
            tokens, scores = zip(*points, strict=True)
            ax.plot(tokens, scores, "o-", color=f"C{i % 10}", label=key.removeprefix(PREFIX))
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("score")
    ax.set_title("benchmarks during training (the paper's Figure 2)")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _val_records(path: Path, step: int) -> list[dict]:
    """Validation records logged before `step` (the one under way is not written yet)."""
    if not path.is_file():
        return []
    return [r for r in read_metrics(path) if r.get("kind") == "val" and r.get("step", 0) < step]


class _Generates(Exception):
    """Raised by `_Probe` when a task asks for generated text."""


class _Probe(LM):
    """An LM that answers likelihoods with zeros and stops a task at its first generation request."""

    def loglikelihood(self, requests, desc=None):
        return [(0.0, False)] * len(requests)

    def generate(self, requests, desc=None):
        raise _Generates


def _generates(task: Task, data_dir: Path | None, config: RunConfig) -> bool:
    """Whether `task` generates text; running it on one example also reads its files now, so a missing
    one is a UserError before training rather than at the first validation."""
    try:
        task.run(_Probe(), data_dir, dataclasses.replace(config, limit=1))
    except _Generates:
        return True
    return False


def _register_hidden(model: torch.nn.Module) -> None:
    """Scoring calls `model.hidden`, not `forward`: FSDP must gather the root's weights around it too
    (they are gathered already when the validation loss ran a forward just before, but not otherwise)."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if isinstance(model, FSDPModule) and not getattr(model, "_hidden_registered", False):
        register_fsdp_forward_method(model, "hidden")
        model._hidden_registered = True
