"""The pretraining mixture (Table 1): each source's sampling proportion and epochs.

A recipe names it in a `[mixture]` table, one sub-table per source:

    [mixture.commoncrawl]
    weight = 0.67   # share of the training tokens drawn from this source
    epochs = 1.10   # passes over the source that share implies at the paper's 1.4T tokens (informational)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from llamafoundry.errors import UserError
from llamafoundry.fileio import read_toml


@dataclass(frozen=True)
class SourceShare:
    weight: float
    epochs: float | None = None


# Table 1 of the paper.
PAPER_MIXTURE: dict[str, SourceShare] = {
    "commoncrawl": SourceShare(0.670, 1.10),
    "c4": SourceShare(0.150, 1.06),
    "github": SourceShare(0.045, 0.64),
    "wikipedia": SourceShare(0.045, 2.45),
    "books": SourceShare(0.045, 2.23),
    "arxiv": SourceShare(0.025, 1.06),
    "stackexchange": SourceShare(0.020, 1.03),
}


def parse_mixture(table: dict, where: str) -> dict[str, SourceShare]:
    """Validate a `[mixture]` table; weights are normalised to sum to 1."""
    if not isinstance(table, dict) or not table:
        raise UserError(f"{where}: [mixture] must name at least one source with a weight")
    shares = {}
    for source, entry in table.items():
        if not isinstance(entry, dict) or set(entry) - {"weight", "epochs"}:
            raise UserError(f"{where}: [mixture.{source}] takes only 'weight' and 'epochs'")
        weight = entry.get("weight")
        if not _positive(weight):
            raise UserError(f"{where}: [mixture.{source}] weight must be a positive number, got {weight!r}")
        epochs = entry.get("epochs")
        if epochs is not None and not _positive(epochs):
            raise UserError(f"{where}: [mixture.{source}] epochs must be a positive number, got {epochs!r}")
        shares[source] = SourceShare(float(weight), None if epochs is None else float(epochs))
    total = sum(s.weight for s in shares.values())
    return {name: SourceShare(s.weight / total, s.epochs) for name, s in shares.items()}


def _positive(value: object) -> bool:
    """A finite number above 0 (TOML's nan and inf are floats; true is no number)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an integer beyond any float
        return False


def load_mixture(path: str | os.PathLike) -> dict[str, SourceShare]:
    """The `[mixture]` table of a TOML recipe (e.g. configs/data/llama.toml)."""
    recipe = read_toml(path, "mixture recipe")
    if "mixture" not in recipe:
        raise UserError(f"{path} has no [mixture] table")
    return parse_mixture(recipe["mixture"], str(path))
