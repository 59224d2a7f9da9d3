"""The paper's thesis, reproduced on two CPU cores in about an hour (`llamafoundry scaling thesis`).

LLaMA's claim (Sec. 1, Figures 1-2): for a given level of performance the preferred model is not the
fastest to train but the fastest at inference, so a smaller model trained on more tokens than is
compute-optimal; and a small model's loss keeps falling well past its compute-optimal token count. Here:

1. corpus, tokenizer, tokens   the quickstart's corpus (quickstart.py), a small vocabulary
2. sweep                       tiny LLaMAs x token budgets (`scaling run`, configs/thesis-cpu.toml)
3. fit                         L(N, D) = E + A/N^alpha + B/D^beta to every validation (`scaling fit`)
4. the two claims              (a) the smallest model's loss past its compute-optimal tokens; (b) the
                               planner's choice for a target loss as the inference volume grows
5. the write-up                a markdown file whose every claim is computed from the numbers beside it

Each stage reuses what an earlier run finished, so an interrupted reproduction continues where it stopped.
"""

from __future__ import annotations

import datetime
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.quickstart import REPO, QuickstartOptions, build_corpus, build_tokenizer, build_tokens
from llamafoundry.train.scaling import SHORT_RUN_LR_SCALE

THESIS_KIND = "thesis reproduction"
FIGURES_KIND = "thesis figures"
HEADER = "<!-- written by `llamafoundry scaling thesis`; rerun it (make thesis) rather than editing -->"
# Inference volumes the planner is asked about, as multiples of the compute-optimal model's training tokens.
SERVED = (0.0, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class ThesisOptions:
    out: Path = Path("runs/thesis")
    doc: Path = Path("runs/thesis/thesis.md")  # its figures go in a folder beside it, named as its stem
    vocab_size: int = 1024
    sizes: tuple[str, ...] = ("16x1", "32x1", "48x2", "64x2", "96x3")
    budgets: tuple[float, ...] = (5e5, 1e6, 2e6, 4e6)
    points: int = 8  # validations along each run
    lr_scale: float = SHORT_RUN_LR_SCALE
    min_tokens: float = 2.5e5  # points before this are the optimiser's transient, not the law
    bootstrap: int = 100
    config: Path = REPO / "configs" / "thesis-cpu.toml"
    overwrite: bool = False
    overrides: tuple[str, ...] = ()

    @property
    def figures(self) -> Path:
        return self.doc.parent / self.doc.stem


def run_thesis(opts: ThesisOptions) -> Path:
    """Every stage (reusing finished ones) in `opts.out`; the write-up at `opts.doc`; its path."""
    from llamafoundry.train.recipe import load_run_recipe
    from llamafoundry.train.sweep import Size, grid, run_sweep

    if not opts.config.is_file():
        raise UserError(f"{opts.config} not found: run from a checkout of the project, or pass --config")
    fileio.check_output(opts.doc, overwrite=opts.overwrite, folder=False, recognise=_is_our_doc)
    fileio.check_output(opts.figures, overwrite=opts.overwrite)
    start = time.monotonic()
    fileio.claim_run_dir(opts.out, THESIS_KIND)
    qs = QuickstartOptions(out=opts.out, vocab_size=opts.vocab_size)
    corpus = build_corpus(qs)
    tokens = build_tokens(qs, corpus, build_tokenizer(qs, corpus))
    base = load_run_recipe(opts.config, ["--data.tokens", str(tokens), *opts.overrides])
    sizes = [Size.parse(s) for s in opts.sizes]
    print(f"\n== sweep: {len(sizes)} sizes x {len(opts.budgets)} token budgets", flush=True)
    runs = grid(base, sizes, list(opts.budgets), opts.out / "sweep", opts.points, "kaplan", opts.lr_scale)
    run_sweep(runs, opts.out / "sweep")
    print("\n== fit and plan", flush=True)
    result = analyse(opts, [run.folder for run in runs])
    result["minutes"] = (time.monotonic() - start) / 60
    return write_up(opts, result)


def _is_our_doc(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n") == HEADER


def analyse(opts: ThesisOptions, run_dirs: list[Path]) -> dict:
    """The fit, and the numbers behind both claims, from the sweep's run folders."""
    from llamafoundry.train.compare import read_run
    from llamafoundry.train.scaling import fit_law, run_points

    runs = [read_run(d) for d in run_dirs]
    points = [p for d in run_dirs for p in run_points(d) if p[1] >= opts.min_tokens]
    fit = fit_law(points, bootstrap=opts.bootstrap)
    smallest = smallest_model(runs, fit.law)
    return {
        "runs": runs,
        "points": points,
        "fit": fit,
        "smallest": smallest,
        "units": loss_units(run_dirs[0]),
    }


def loss_units(run_dir: Path) -> dict[str, int]:
    """What the fitted losses are per: a token of a vocabulary of this size, predicted from this much
    context. A fit used elsewhere (the quickstart's choice of size) must train in the same units."""
    from llamafoundry.train.recipe import load_run_recipe

    recipe = load_run_recipe(Path(run_dir) / "config.toml")
    return {"vocab_size": recipe.model_config().vocab_size, "seq_len": recipe.data.seq_len}


def optimal_tokens(law, params: float) -> float:
    """The training tokens at which `params` is the compute-optimal size: where alpha A / N^alpha equals
    beta B / D^beta, the condition of Hoffmann et al.'s eq. 4."""
    return (law.beta * law.B * params**law.alpha / (law.alpha * law.A)) ** (1 / law.beta)


def smallest_model(runs: list[dict], law) -> dict:
    """Claim (a): the smallest model's longest run, against its compute-optimal token count."""
    small = min(runs, key=lambda r: (r["matmul_params"], -_last_val(r)["tokens"]))
    val = [(r["tokens"], r["loss"]) for r in small["records"] if r.get("kind") == "val"]
    d_opt = optimal_tokens(law, small["matmul_params"])
    at_opt = min(val, key=lambda p: abs(math.log(p[0] / d_opt)))
    final = val[-1]
    return {
        "run": small["name"],
        "params": small["matmul_params"],
        "d_opt": d_opt,
        "val": val,
        "at_opt": at_opt,
        "final": final,
        "past": final[0] / d_opt,
        "still_falling": final[1] < val[-2][1] if len(val) > 1 else False,
    }


def _last_val(run: dict) -> dict:
    return [r for r in run["records"] if r.get("kind") == "val"][-1]


def planner_rows(law, target: float) -> list[dict]:
    """Claim (b): the planner's choice for `target` as the inference volume grows, in multiples of the
    compute-optimal model's own training tokens."""
    from llamafoundry.train.scaling import plan

    optimal = plan(law, target, 0.0)
    rows = []
    for multiple in SERVED:
        choice = plan(law, target, multiple * optimal.tokens)
        total = choice.train_flops + choice.inference_flops
        rows.append(
            {"multiple": multiple, "served": multiple * optimal.tokens, "choice": choice, "total": total}
        )
    for row in rows:  # what picking the compute-optimal model instead would cost at that volume
        row["optimal_total"] = optimal.train_flops + 2 * optimal.params * row["served"]
    return rows


def target_loss(law, tokens: float) -> float:
    """The lowest loss (to 4 decimals, as the page prints it and the planner uses it) whose compute-optimal
    model trains on at most `tokens`: the sweep's largest budget, so the planner starts inside the data."""
    from llamafoundry.train.scaling import plan

    low, high = law.E, law.E + 1.0
    while plan(law, high, 0.0).tokens > tokens:
        low, high = high, high + 1.0
    for _ in range(60):  # the compute-optimal tokens fall as the target rises
        middle = (low + high) / 2
        low, high = (middle, high) if plan(law, middle, 0.0).tokens > tokens else (low, middle)
    return math.ceil(high * 1e4) / 1e4


def write_up(opts: ThesisOptions, result: dict) -> Path:
    """The markdown write-up and its figures."""
    from llamafoundry.train.scaling import plot_fit

    law = result["fit"].law
    budget = max(_last_val(r)["tokens"] for r in result["runs"])
    target = target_loss(law, budget)
    rows = planner_rows(law, target)
    with fileio.atomic_dir(opts.figures, kind=FIGURES_KIND, overwrite=opts.overwrite) as folder:
        plot_fit(result["points"], law, folder)
        plot_smallest(result["smallest"], folder / "smallest_model.png")
        fileio.write_json(folder / "fit.json", result["fit"].to_dict() | {"units": result["units"]})
    text = _markdown(opts, result, target, rows, budget)
    with fileio.output_file(opts.doc, overwrite=opts.overwrite, recognise=_is_our_doc) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return opts.doc


def plot_smallest(small: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(*zip(*small["val"], strict=True), "o-", label=f"{small['run']} ({small['params']:,} parameters)")
    ax.axvline(small["d_opt"], color="tab:red", linestyle="--", label="compute-optimal tokens (the fit)")
    ax.set(xscale="log", xlabel="training tokens", ylabel="validation loss", title="the smallest model")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _markdown(opts: ThesisOptions, result: dict, target: float, rows: list[dict], budget: int) -> str:
    fit, small = result["fit"], result["smallest"]
    law = fit.law
    fig = opts.figures.name
    falling = small["at_opt"][1] - small["final"][1]
    claim_a = (
        f"**holds**: its validation loss fell by a further {falling:.3f} nats between its compute-optimal "
        f"token count and {small['past']:.1f}x that, and was still falling at its last validation"
        if falling > 0 and small["still_falling"] and small["past"] >= 2
        else "**does not hold here**: see the numbers"
    )
    compute_optimal_n = rows[0]["choice"].params
    smaller = [r for r in rows if r["multiple"] > 0 and r["choice"].params < 0.9 * compute_optimal_n]
    claim_b = (
        f"**holds**: serving {smaller[0]['multiple']:g}x the compute-optimal model's training tokens, the "
        f"planner picks a model {1 - smaller[0]['choice'].params / compute_optimal_n:.0%} smaller, trained "
        f"on {smaller[0]['choice'].tokens / rows[0]['choice'].tokens:.1f}x the tokens"
        if smaller
        else "**does not hold here**: see the numbers"
    )
    lines = [
        HEADER,
        "# The paper's thesis on two CPU cores",
        "",
        "LLaMA's claim (Sec. 1): under an inference budget the best model is not the compute-optimal one but "
        "a smaller one trained on more tokens, and a small model keeps improving past its compute-optimal "
        "token count. This page tests both on tiny LLaMAs trained on the quickstart corpus. It was written "
        f"by `make thesis` (`llamafoundry scaling thesis`) on {platform.machine()} ({_cpus()} CPU cores), "
        f"{datetime.date.today().isoformat()}: the sweep's runs trained for {_train_minutes(result['runs']):.0f} "
        f"minutes in all (their metrics.jsonl), and this invocation took {result['minutes']:.1f} minutes. Rerun it to "
        "check every number.",
        "",
        "## The sweep",
        "",
        f"{len(opts.sizes)} sizes x {len(opts.budgets)} token budgets, each a run folder under "
        f"`{opts.out / 'sweep'}` (recipe `{opts.config.relative_to(REPO) if opts.config.is_relative_to(REPO) else opts.config}`, "
        f"tokenizer of {opts.vocab_size} pieces). Learning rate and warmup per size follow the rule in "
        f"`train/sweep.py`: {opts.lr_scale:g}x Kaplan et al.'s lr(N) = 0.003239 - 0.0001395 ln N (their "
        "runs were 250K steps, these a few hundred to a few thousand) and a warmup of N tokens. "
        "N counts the parameters that multiply activations (all but the embedding table), the N of C = 6ND.",
        "",
        "| run | N | tokens | validation loss |",
        "|---|---|---|---|",
        *[
            f"| {r['name']} | {r['matmul_params']:,} | {_last_val(r)['tokens']:,} | {_last_val(r)['loss']:.4f} |"
            for r in result["runs"]
        ],
        "",
        "## The fit",
        "",
        f"L(N, D) = E + A/N^alpha + B/D^beta, fitted as Hoffmann et al. did (Huber loss on log-loss, L-BFGS from "
        f"a grid of starts) to {fit.points} validation points at {opts.min_tokens:,.0f} tokens or more, with "
        f"95% intervals from {opts.bootstrap} bootstrap resamples:",
        "",
        "| coefficient | fit | 95% interval |",
        "|---|---|---|",
        *[
            f"| {k} | {v:.4g} | [{fit.intervals[k][0]:.4g}, {fit.intervals[k][1]:.4g}] |"
            for k, v in law.to_dict().items()
        ],
        "",
        f"![loss against tokens per size, with the fitted curves]({fig}/loss_vs_tokens.png)",
        f"![iso-loss contours and the compute-optimal frontier]({fig}/iso_loss.png)",
        "",
        "## (a) The smallest model keeps improving past its compute-optimal token count",
        "",
        f"The smallest model ({small['run']}, N = {small['params']:,}) is compute-optimal, by the fit, at "
        f"D = {small['d_opt']:.4g} tokens (where alpha A/N^alpha = beta B/D^beta). Its validation loss "
        f"was {small['at_opt'][1]:.4f} at {small['at_opt'][0]:,} tokens, the validation nearest that, and "
        f"{small['final'][1]:.4f} at {small['final'][0]:,} tokens, {small['past']:.1f}x past it.",
        "",
        f"The claim {claim_a}.",
        "",
        "| tokens | validation loss |",
        "|---|---|",
        *[f"| {t:,} | {loss:.4f} |" for t, loss in small["val"]],
        "",
        f"![the smallest model's validation loss]({fig}/smallest_model.png)",
        "",
        "## (b) Under an inference budget the planner picks a smaller model",
        "",
        f"Target: loss {target:.4f}, the lowest whose compute-optimal model trains on at most the sweep's "
        f"largest budget ({budget:,} tokens), so the planner starts inside the data. The planner "
        "(`llamafoundry scaling plan "
        f"--fit {fig}/fit.json --target-loss {target:.4f} --inference-tokens T`) minimises training plus "
        "inference compute, 6ND + 2NT. T is given in multiples of the compute-optimal model's own training "
        "tokens; a deployed model serves many times what it was trained on.",
        "",
        "| T (x compute-optimal D) | N | D | tokens/param | total FLOPs | with the compute-optimal model |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['served']:.3g} ({r['multiple']:g}x) | {r['choice'].params:,.0f} | {r['choice'].tokens:,.0f} | "
            f"{r['choice'].tokens / r['choice'].params:,.0f} | {r['total']:.3g} | {r['optimal_total']:.3g} |"
            for r in rows
        ],
        "",
        _extrapolated(rows, budget),
        "",
        f"The claim {claim_b}.",
        "",
        "## What this does not show",
        "",
        "These models have 10^4-10^6 parameters and see a few million tokens of one small corpus; the fit is "
        "of this corpus and these sizes, and says nothing about its coefficients at the paper's scale. The "
        "points along a run come from a cosine schedule set for the run's full length, so they sit a little "
        "above what a run stopped there would reach (Hoffmann et al. fit final losses only).",
        "",
    ]
    return "\n".join(lines)


def _extrapolated(rows: list[dict], budget: int) -> str:
    beyond = [f"{r['multiple']:g}x" for r in rows if r["choice"].tokens > budget]
    if not beyond:
        return f"Every choice trains on at most {budget:,} tokens, inside the sweep's budgets."
    return (
        f"The choices at T = {', '.join(beyond)} train on more than the sweep's largest budget ({budget:,} "
        "tokens): there the fit is extrapolated."
    )


def _train_minutes(runs: list[dict]) -> float:
    return sum([r for r in run["records"] if r.get("kind") == "train"][-1]["elapsed_s"] for run in runs) / 60


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
