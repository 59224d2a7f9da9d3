"""Scaling sweeps: a grid of model sizes x token budgets on one token folder, each a normal run folder.

`llamafoundry scaling run` trains every (size, budget) of the grid in `SWEEP_DIR/<size>_<budget>/`, one
after another. Each is an ordinary run (resumable, its own metrics.jsonl and report): a finished one is
skipped, an interrupted one resumes from its checkpoint, so rerunning the same command finishes the grid.
Validation runs `points` times along each run, so a run of D tokens also gives (N, D') points for every
D' < D that `scaling fit` uses.

Per size, the learning rate and warmup follow RULE rather than the base recipe. Under torchrun every
run uses all the ranks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.config import ModelConfig, matmul_params
from llamafoundry.errors import UserError
from llamafoundry.train.recipe import RunRecipe, validate

SWEEP_KIND = "scaling sweep"
LR_RULES = ("kaplan", "recipe")
RULE = (
    "peak learning rate by Kaplan et al. (2020, eq. D.1), fitted on transformer LMs of 1e3 to 1e9 "
    "parameters: lr(N) = 0.003239 - 0.0001395 ln N, N the parameters that multiply activations (the N of "
    "C = 6ND), times --lr-scale; warmup of N tokens (LLaMA-7B's 2,000 steps of 4M tokens are 1.2 N), at most 5% of the run"
)
_SIZE = re.compile(r"(\d+)x(\d+)(?:x(\d+))?")


@dataclass(frozen=True)
class Size:
    """A model width and depth; heads of 64 dimensions (at least one) unless given."""

    dim: int
    n_layers: int
    n_heads: int

    @classmethod
    def parse(cls, text: str) -> Size:
        """'DIMxLAYERS' or 'DIMxLAYERSxHEADS', e.g. '128x4'."""
        match = _SIZE.fullmatch(text.strip())
        if not match:
            raise UserError(f"model size {text!r} is not DIMxLAYERS or DIMxLAYERSxHEADS, e.g. 128x4")
        dim, layers = int(match[1]), int(match[2])
        heads = int(match[3]) if match[3] else max(1, dim // 64)
        if min(dim, layers, heads) < 1 or dim % heads:
            raise UserError(f"model size {text!r}: dim must be a positive multiple of the heads")
        return cls(dim, layers, heads)

    @property
    def name(self) -> str:
        return f"{self.dim}x{self.n_layers}x{self.n_heads}"


def kaplan_lr(params: float) -> float:
    """Kaplan et al.'s (2020) eq. D.1: the peak learning rate of a model of `params` parameters (floored at 1e-5, where the fit's line crosses zero near 10^10 parameters)."""
    return max(1e-5, 0.003239 - 0.0001395 * math.log(params))


def warmup_steps(params: float, steps: int, batch_tokens: int) -> int:
    """Warmup of `params` tokens, at most 5% of the run's `steps`, at least one step."""
    return max(1, min(round(params / batch_tokens), steps // 20))


@dataclass(frozen=True)
class SweepRun:
    size: Size
    tokens: int
    recipe: RunRecipe

    @property
    def folder(self) -> Path:
        return Path(self.recipe.output.dir)


def grid(
    base: RunRecipe,
    sizes: list[Size],
    budgets: list[float],
    out: Path,
    points: int,
    lr_rule: str,
    lr_scale: float = 1.0,
) -> list[SweepRun]:
    """The run of each (size, budget), smallest compute first, with its recipe filled in; `lr_scale`
    multiplies the rule's learning rate (Kaplan et al.'s runs were 250K steps; short runs take more)."""
    if lr_rule not in LR_RULES:
        raise UserError(f"--lr-rule must be one of {', '.join(LR_RULES)}, got {lr_rule!r}")
    if points < 1:
        raise UserError(f"--points must be at least 1, got {points}")
    if not (math.isfinite(lr_scale) and lr_scale > 0):
        raise UserError(f"--lr-scale must be a positive number, got {lr_scale}")
    if not sizes or not budgets:
        raise UserError("a sweep needs at least one --sizes entry and one --budgets entry")
    runs = []
    for size in sizes:
        for budget in budgets:
            if not (math.isfinite(budget) and budget >= base.train.batch_tokens):
                raise UserError(
                    f"budget {budget:g} tokens is less than one step of train.batch_tokens "
                    f"{base.train.batch_tokens:,}"
                )
            runs.append(_run(base, size, int(budget), out, points, lr_rule, lr_scale))
    return sorted(runs, key=lambda r: matmul_params(r.recipe.model_config()) * r.tokens)


def _run(
    base: RunRecipe, size: Size, tokens: int, out: Path, points: int, lr_rule: str, lr_scale: float
) -> SweepRun:
    model = dict(base.model) | {"dim": size.dim, "n_layers": size.n_layers, "n_heads": size.n_heads}
    model.pop("n_kv_heads", None)  # a base recipe's grouped-query setting need not divide these heads
    recipe = dataclasses.replace(base, model=model)
    cfg: ModelConfig = recipe.model_config()
    params = matmul_params(cfg)
    steps = max(1, math.ceil(tokens / base.train.batch_tokens))
    train = dataclasses.replace(
        base.train,
        steps=0,
        tokens=tokens,
        max_minutes=0.0,
        lr=lr_scale * (kaplan_lr(params) if lr_rule == "kaplan" else base.train.lr),
        warmup_steps=warmup_steps(params, steps, base.train.batch_tokens),
    )
    # Rounded up, so the last periodic validation falls a full interval before the run's final one.
    every = math.ceil(steps / points)
    recipe = dataclasses.replace(
        recipe,
        train=train,
        eval=dataclasses.replace(base.eval, every=every),
        checkpoint=dataclasses.replace(base.checkpoint, every=base.checkpoint.every or every, keep=1),
        output=dataclasses.replace(base.output, dir=str(out / f"{size.name}_{_tokens_name(tokens)}")),
    )
    validate(recipe)
    return SweepRun(size, tokens, recipe)


def _tokens_name(tokens: int) -> str:
    """2000000 -> '2M', 500000 -> '500K', 1500000 -> '1.5M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:g}{unit}"
    return str(tokens)


def is_done(run: SweepRun) -> bool:
    """Whether the run finished: its report is written last, after the model folder."""
    return (run.folder / "report.md").is_file() and (run.folder / "model" / "config.json").is_file()


def check_started_alike(run: SweepRun) -> None:
    """A run folder from an earlier sweep must have been started with this recipe, or resuming would
    mix two runs in one metrics file."""
    from llamafoundry.train.recipe import load_run_recipe

    config = run.folder / "config.toml"
    # Compared as recipes, not text: a field added to the recipe since keeps its default in both.
    if config.is_file() and load_run_recipe(config) != run.recipe:
        raise UserError(
            f"{run.folder} was started with other settings than this sweep gives it; rerun the sweep "
            "as it was, or give a new --output folder"
        )


def run_sweep(runs: list[SweepRun], out: Path, device: str | None = None) -> list[dict]:
    """Train every run of the grid not yet done, in `out` (a sweep folder of ours), resuming
    interrupted ones; one summary per run: its folder, size, parameters, budget and what happened."""
    from llamafoundry.train import checkpointing
    from llamafoundry.train.trainer import train

    main = os.environ.get("RANK", "0") == "0"  # between runs no process group exists to ask
    if main:
        fileio.claim_run_dir(out, SWEEP_KIND)
    for run in runs:
        check_started_alike(run)
    summary = []
    for i, run in enumerate(runs, 1):
        params = matmul_params(run.recipe.model_config())
        head = f"[{i}/{len(runs)}] {run.folder.name}: {params:,} parameters, {run.tokens:,} tokens"
        if is_done(run):
            status = "done already"
            if main:
                print(f"{head}: done already", flush=True)
        else:
            resume = checkpointing.latest_checkpoint(run.folder / "checkpoints") is not None
            if main:
                print(f"{head}, lr {run.recipe.train.lr:.3g}{' (resuming)' if resume else ''}", flush=True)
            train(run.recipe, resume=resume, device=device)
            status = "resumed" if resume else "trained"
        summary.append(
            {"run": run.folder.name, "size": run.size.name, "params": params, "tokens": run.tokens}
            | {"status": status}
        )
    if main:
        fileio.write_json(out / "sweep.json", {"runs": summary, "rule": RULE})
    return summary


def run_folders(paths: list[Path]) -> list[Path]:
    """`paths` with each sweep folder replaced by the run folders in it (those with a config.toml)."""
    folders = []
    for path in paths:
        marker = fileio.read_marker(path) if path.is_dir() else None
        if marker is not None and marker.get("kind") == SWEEP_KIND:
            found = sorted(p for p in path.iterdir() if (p / "config.toml").is_file())
            if not found:
                raise UserError(f"sweep {path} has no runs yet; start it with `llamafoundry scaling run`")
            folders += found
        else:
            folders.append(path)
    return folders
