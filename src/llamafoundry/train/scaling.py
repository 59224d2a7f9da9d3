"""The paper's thesis in numbers: the loss law L(N, D), its fit to your own runs, and the planner that
picks a model for an inference budget (Sec. 1; Hoffmann et al., 2022).

    L(N, D) = E + A / N^alpha + B / D^beta        (N parameters, D training tokens)

`fit_law` fits it as Hoffmann et al. did (their approach 3): a Huber loss (delta 1e-3) on the log of the
loss, minimised by L-BFGS from a grid of starting points, with bootstrap intervals for each coefficient.
`compute_optimal` is the frontier: the (N, D) of least loss for a training compute C = 6ND. `plan` is the
paper's point: for a target loss and T tokens to serve, the (N, D) that minimise the total compute
6ND + 2NT. With T = 0 it is the compute-optimal model; as T grows it moves to smaller models trained on
more tokens, as LLaMA did.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamafoundry.errors import UserError

HUBER_DELTA = 1e-3
MIN_POINTS = 6  # five coefficients: fewer points cannot pin them down
# Starting points (a = log A, b = log B, e = log E, alpha, beta), a coarser cut of Hoffmann et al.'s grid.
STARTS = list(
    itertools.product(
        (0.0, 5.0, 10.0, 15.0), (0.0, 5.0, 10.0, 15.0), (-1.0, 0.0, 1.0), (0.2, 0.6), (0.2, 0.6)
    )
)

# Kaplan et al.'s lr(N) came from 250K-step runs; the thesis sweep's have 250 to 2,000 steps. Measured on
# the 32x1 model, 2M tokens in batches of 2,048: validation loss 3.65 at their rate, 3.46 at 2.9x it.
# Here, torch-free, so that `thesis` (imported to build the CLI) does not import torch.
SHORT_RUN_LR_SCALE = 3.0


@dataclass(frozen=True)
class LossLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def tokens_for(self, params: float, target: float) -> float:
        """Training tokens at which a model of `params` reaches `target` (inf if it never does)."""
        gap = target - self.E - self.A / params**self.alpha
        return (self.B / gap) ** (1 / self.beta) if gap > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# Hoffmann et al. (2022), approach 3, as published. Its frontier asks for 50 to 120 tokens per parameter
# between 1e21 and 1e25 FLOPs, not the ~20 of their approaches 1 and 2 and of Chinchilla itself.
CHINCHILLA_PUBLISHED = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
# Besiroglu et al. (2024) refitted approach 3 to Hoffmann et al.'s own data (read off their Figure 4) and
# found the published fit does not describe it; theirs does, and its frontier is ~20 tokens per parameter.
CHINCHILLA_REPLICATION = LossLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
CHINCHILLA_LAWS = {"replication": CHINCHILLA_REPLICATION, "published": CHINCHILLA_PUBLISHED}


@dataclass(frozen=True)
class Fit:
    law: LossLaw
    intervals: dict[str, tuple[float, float]]  # coefficient -> 95% bootstrap interval
    points: int
    huber: float  # the objective at the optimum

    def to_dict(self) -> dict:
        return {
            "law": self.law.to_dict(),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "points": self.points,
            "huber": self.huber,
        }


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple:
    """The Huber loss of log L - log(e^(a - alpha log N) + e^(b - beta log D) + e^e), and its gradient."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    predicted = top + np.log(weights.sum(axis=0))
    share = weights / weights.sum(axis=0)  # d predicted / d term
    residual = predicted - log_l
    small = np.abs(residual) <= HUBER_DELTA
    value = np.where(small, 0.5 * residual**2, HUBER_DELTA * (np.abs(residual) - 0.5 * HUBER_DELTA)).sum()
    slope = np.where(small, residual, HUBER_DELTA * np.sign(residual))
    grad = np.array(
        [
            (slope * share[0]).sum(),
            (slope * share[1]).sum(),
            (slope * share[2]).sum(),
            -(slope * share[0] * log_n).sum(),
            -(slope * share[1] * log_d).sum(),
        ]
    )
    return value, grad


def _minimise(starts: Sequence[Sequence[float]], data: tuple[np.ndarray, ...]) -> tuple[np.ndarray, float]:
    """The best of L-BFGS-B runs from `starts` (scipy's tolerances: enough to find the basin), then that
    one polished to tight tolerances: the objective is ~1e-4 with gradients as small, and scipy's
    default tolerances stop far from its minimum."""
    best = min((_lbfgs(start, data, {"maxiter": 500}) for start in starts), key=lambda r: r.fun)
    polished = _lbfgs(best.x, data, {"gtol": 1e-14, "ftol": 1e-16, "maxiter": 5000})
    result = polished if polished.fun <= best.fun else best
    return result.x, float(result.fun)


def _lbfgs(start: Sequence[float], data: tuple[np.ndarray, ...], options: dict):
    from scipy.optimize import minimize

    # The law's own range (Hoffmann et al.'s grid stops the exponents at 2): without it, points from too few
    # sizes fit an exponent of 30 and a coefficient of 1e160, which no plan can use.
    bounds = [(-20.0, 60.0), (-20.0, 60.0), (-10.0, 5.0), (0.01, 2.0), (0.01, 2.0)]
    x0 = np.asarray(start, dtype=np.float64)
    return minimize(_objective, x0, args=data, jac=True, method="L-BFGS-B", bounds=bounds, options=options)


def _law(theta: np.ndarray) -> LossLaw:
    a, b, e, alpha, beta = theta
    return LossLaw(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta))


def fit_law(points: Sequence[tuple[float, float, float]], bootstrap: int = 100, seed: int = 0) -> Fit:
    """The law that fits (parameters, tokens, loss) points, with 95% bootstrap intervals per coefficient."""
    if len(points) < MIN_POINTS:
        raise UserError(
            f"fitting L(N, D) needs at least {MIN_POINTS} (parameters, tokens, loss) points, got {len(points)}: "
            "train more sizes or measure validation loss more often (eval.every)"
        )
    array = np.asarray(points, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise UserError("every point needs positive, finite parameters, tokens and loss")
    if len(set(array[:, 0])) < 2 or len(set(array[:, 1])) < 2:
        raise UserError(
            "fitting L(N, D) needs points at two or more model sizes and two or more token counts"
        )
    data = (np.log(array[:, 0]), np.log(array[:, 1]), np.log(array[:, 2]))
    theta, value = _minimise(STARTS, data)
    rng = np.random.default_rng(seed)
    laws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(array), len(array))
        laws.append(_law(_minimise([theta], tuple(column[pick] for column in data))[0]).to_dict())
    laws = laws or [_law(theta).to_dict()]
    intervals = {
        k: (float(np.percentile([d[k] for d in laws], 2.5)), float(np.percentile([d[k] for d in laws], 97.5)))
        for k in laws[0]
    }
    return Fit(_law(theta), intervals, len(points), value)


def compute_optimal(law: LossLaw, flops: float) -> tuple[float, float]:
    """(N, D) of least loss for a training compute of `flops` = 6ND (Hoffmann et al.'s eq. 4)."""
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    params = g * (flops / 6) ** (law.beta / (law.alpha + law.beta))
    return params, flops / 6 / params


@dataclass(frozen=True)
class Choice:
    params: float
    tokens: float
    train_flops: float
    inference_flops: float
    loss: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def plan(law: LossLaw, target_loss: float, inference_tokens: float) -> Choice:
    """The model reaching `target_loss` at the least total compute 6ND + 2N x `inference_tokens`."""
    if not math.isfinite(target_loss) or target_loss <= law.E:
        raise UserError(
            f"a loss of {target_loss} is unreachable: the law's irreducible loss E is {law.E:.4g}; aim above it"
        )
    if not (math.isfinite(inference_tokens) and inference_tokens >= 0):
        raise UserError(f"inference tokens must be 0 or more, got {inference_tokens}")
    from scipy.optimize import minimize_scalar

    smallest = (law.A / (target_loss - law.E)) ** (1 / law.alpha)  # below it, no token count is enough

    def log_total(log_n: float) -> float:
        n = math.exp(log_n)
        return math.log(6 * n * law.tokens_for(n, target_loss) + 2 * n * inference_tokens)

    # The total falls then rises in log N: a scan brackets its minimum, a bounded search finishes it.
    scan = np.linspace(math.log(smallest) + 1e-6, math.log(smallest) + math.log(1e8), 400)
    best = int(np.argmin([log_total(x) for x in scan]))
    bounds = (scan[max(0, best - 1)], scan[min(len(scan) - 1, best + 1)])
    n = math.exp(minimize_scalar(log_total, bounds=bounds, method="bounded", options={"xatol": 1e-12}).x)
    d = law.tokens_for(n, target_loss)
    return Choice(n, d, 6 * n * d, 2 * n * inference_tokens, law.loss(n, d))


def read_law(path: str | os.PathLike) -> LossLaw:
    """The law in a fit from `scaling fit` or `scaling thesis` (its folder or fit.json)."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    try:
        coefficients = json.loads(path.read_text(encoding="utf-8"))["law"]
        law = LossLaw(**{k: float(coefficients[k]) for k in ("E", "A", "B", "alpha", "beta")})
    except FileNotFoundError:
        raise UserError(f"fit {path} not found; make one with `llamafoundry scaling fit RUN...`") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a fit from `llamafoundry scaling fit`") from None
    if not all(math.isfinite(v) and v > 0 for v in law.to_dict().values()):
        raise UserError(f"{path} holds coefficients that are not positive finite numbers")
    return law


def run_points(run_dir: str | os.PathLike) -> list[tuple[float, float, float]]:
    """(parameters, tokens, validation loss) at every validation of a training run folder; the parameters
    that multiply activations, the N of C = 6ND (`config.matmul_params`)."""
    from llamafoundry.train.compare import read_run

    run = read_run(run_dir)
    return [
        (float(run["matmul_params"]), float(r["tokens"]), float(r["loss"]))
        for r in run["records"]
        if r.get("kind") == "val" and r.get("tokens", 0) > 0
    ]


def plot_fit(points: Sequence[tuple[float, float, float]], law: LossLaw, folder: Path) -> list[Path]:
    """Two PNGs in `folder`: loss against tokens per model size with the fitted curves, and iso-loss
    contours over (parameters, tokens) with the compute-optimal frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({p[0] for p in points})
    tokens = np.geomspace(min(p[1] for p in points), max(p[1] for p in points), 100)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, n in enumerate(sizes):
        color = plt.cm.viridis(i / max(1, len(sizes) - 1))
        seen = [(d, loss) for size, d, loss in points if size == n]
        ax.plot(*zip(*seen, strict=True), "o", color=color, markersize=3)
        ax.plot(tokens, [law.loss(n, d) for d in tokens], color=color, label=f"{n / 1e6:.3g}M parameters")
    ax.set(xscale="log", xlabel="training tokens", ylabel="validation loss", title="L(N, D) fit")
    ax.legend()
    curves = folder / "loss_vs_tokens.png"
    fig.savefig(curves, dpi=120, bbox_inches="tight")
    plt.close(fig)

    grid_n = np.geomspace(min(sizes) / 3, max(sizes) * 30, 120)
    grid_d = np.geomspace(tokens[0] / 3, tokens[-1] * 30, 120)
    losses = np.array([[law.loss(n, d) for n in grid_n] for d in grid_d])
    fig, ax = plt.subplots(figsize=(8, 5))
    contours = ax.contour(grid_n, grid_d, losses, levels=12, cmap="viridis")
    ax.clabel(contours, fontsize=7)
    budgets = np.geomspace(6 * grid_n[0] * grid_d[0], 6 * grid_n[-1] * grid_d[-1], 60)
    frontier = [compute_optimal(law, c) for c in budgets]
    ax.plot(*zip(*frontier, strict=True), color="tab:red", label="compute-optimal frontier")
    ax.set(
        xscale="log", yscale="log", xlabel="parameters", ylabel="training tokens", title="iso-loss contours"
    )
    ax.set(xlim=(grid_n[0], grid_n[-1]), ylim=(grid_d[0], grid_d[-1]))
    ax.legend()
    iso = folder / "iso_loss.png"
    fig.savefig(iso, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [curves, iso]
