"""Runs side by side (the paper's Figure 1): training and validation loss against tokens seen for several
run folders in one PNG, every other metric that validation recorded (benchmark scores from `on_validate`
hooks) in panels of its own, and a markdown table of where each run ended."""

from __future__ import annotations

import os
from pathlib import Path

from llamafoundry.errors import UserError

VALIDATION_KEYS = {"kind", "step", "tokens", "loss", "ppl"}  # what every validation record holds


def read_run(run_dir: str | os.PathLike) -> dict:
    """A run folder's name, parameter counts (all, and those that multiply activations) and metric
    records."""
    from llamafoundry.config import matmul_params, num_params
    from llamafoundry.train.metrics import read_metrics
    from llamafoundry.train.recipe import load_run_recipe

    run = Path(run_dir)
    if not (run / "config.toml").is_file() or not (run / "metrics.jsonl").is_file():
        raise UserError(f"{run} is not a training run folder (no config.toml and metrics.jsonl)")
    records = read_metrics(run / "metrics.jsonl")
    cfg = load_run_recipe(run / "config.toml").model_config()
    return {
        "name": run.name,
        "path": run,
        "params": num_params(cfg),
        "matmul_params": matmul_params(cfg),
        "records": records,
    }


def read_runs(run_dirs: list[str | os.PathLike]) -> list[dict]:
    """`read_run` of each folder, named by the shortest part of its path that tells it from the others."""
    runs = [read_run(d) for d in run_dirs]
    for run in runs:
        if not any(r.get("kind") == "train" for r in run["records"]):
            raise UserError(f"{run['path']} has no training steps in metrics.jsonl yet")
    if len({r["name"] for r in runs}) < len(runs):
        paths = [r["path"].resolve() for r in runs]
        common = Path(os.path.commonpath(paths))
        for run, path in zip(runs, paths, strict=True):
            run["name"] = str(path.relative_to(common)) if path != common else path.name
    return runs


def table(runs: list[dict]) -> str:
    """Where each run ended: size, tokens, steps, last train and validation loss, speed."""
    lines = [
        "| run | parameters | tokens | steps | train loss | validation loss | perplexity | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        train = [r for r in run["records"] if r.get("kind") == "train"]
        val = [r for r in run["records"] if r.get("kind") == "val"]
        last = train[-1]
        val_cells = f"{val[-1]['loss']:.4f} | {val[-1]['ppl']:.2f}" if val else "- | -"
        lines.append(
            f"| {run['name']} | {run['params'] / 1e6:.1f}M | {last['tokens']:,} | {last['step']} | "
            f"{last['loss']:.4f} | {val_cells} | {last.get('tokens_per_s', 0):,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    """Loss against tokens for every run, and one panel per extra validation metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llamafoundry.train.metrics import ema

    extras = sorted(
        {k for run in runs for r in run["records"] if r.get("kind") == "val" for k in r} - VALIDATION_KEYS
    )
    fig, axes = plt.subplots(1, 1 + len(extras), figsize=(8 + 5 * len(extras), 5), squeeze=False)
    loss_ax = axes[0][0]
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        train = [r for r in run["records"] if r.get("kind") == "train"]
        val = [r for r in run["records"] if r.get("kind") == "val"]
        label = f"{run['name']} ({run['params'] / 1e6:.1f}M)"
        loss_ax.plot([r["tokens"] for r in train], ema([r["loss"] for r in train]), color=color, label=label)
        if val:
            loss_ax.plot(
                [r["tokens"] for r in val], [r["loss"] for r in val], "o--", color=color, markersize=3
            )
        for ax, key in zip(axes[0][1:], extras, strict=True):
            points = [(r["tokens"], r[key]) for r in val if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", color=color, label=label)
    loss_ax.set(xscale="log", xlabel="tokens seen", ylabel="loss (train EMA; validation dashed)")
    loss_ax.set_title("training runs side by side")
    loss_ax.legend(fontsize=8)
    for ax, key in zip(axes[0][1:], extras, strict=True):
        ax.set(xscale="log", xlabel="tokens seen", ylabel=key, title=key)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
