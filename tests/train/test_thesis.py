"""The thesis reproduction (`scaling thesis`, docs/thesis.md): its page is computed from a real sweep, and
the committed page's claims follow from its own numbers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from llamafoundry.thesis import (
    HEADER,
    ThesisOptions,
    analyse,
    optimal_tokens,
    planner_rows,
    target_loss,
    write_up,
)
from llamafoundry.train.scaling import LossLaw, compute_optimal, plan
from tests.helpers import assert_user_error
from tests.train.test_sweep import sweep

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_optimal_tokens_is_the_frontiers():
    law = LossLaw(E=1.8, A=300.0, B=500.0, alpha=0.35, beta=0.3)
    for flops in (1e15, 1e19, 1e23):
        params, tokens = compute_optimal(law, flops)
        assert optimal_tokens(law, params) == pytest.approx(tokens, rel=1e-9)


def test_the_target_is_the_lowest_loss_whose_compute_optimal_model_fits_the_budget():
    law = LossLaw(E=1.8, A=300.0, B=500.0, alpha=0.35, beta=0.3)
    for budget in (1e6, 4e6, 1e9):
        target = target_loss(law, budget)
        assert plan(law, target, 0.0).tokens <= budget < plan(law, target - 1e-4, 0.0).tokens


def test_the_page_is_written_from_a_sweep(cli, shakespeare_tokens, tmp_path):
    out = tmp_path / "sweep"
    done = sweep(cli, shakespeare_tokens, out, "--points", "4", budgets="4096,16384")
    assert done.returncode == 0, done.stderr
    opts = ThesisOptions(
        out=tmp_path,
        doc=tmp_path / "page.md",
        sizes=("32x1", "64x2"),
        budgets=(4096, 16384),
        min_tokens=0,
        bootstrap=10,
    )
    result = analyse(opts, sorted(p for p in out.iterdir() if p.is_dir()))
    result["minutes"] = 1.0
    assert result["smallest"]["run"] == "32x1x1_16.384K"  # the smallest model's longest run
    page = write_up(opts, result).read_text()
    assert page.startswith(HEADER + "\n")
    for png in ("loss_vs_tokens.png", "iso_loss.png", "smallest_model.png"):
        assert (tmp_path / "page" / png).read_bytes()[:4] == b"\x89PNG"
    assert_page_follows_from_its_numbers(page, tmp_path / "page" / "fit.json")
    # The losses' units go with the fit, for whoever predicts with it (the quickstart's size).
    assert json.loads((tmp_path / "page" / "fit.json").read_text())["units"] == {
        "vocab_size": 512,
        "seq_len": 64,
    }

    # An existing write-up is replaced only with --overwrite, and that is found before any work.
    again = cli("scaling", "thesis", "-o", tmp_path / "work", "--doc", tmp_path / "page.md")
    assert_user_error(again, "page.md")
    assert not (tmp_path / "work").exists()


def test_the_committed_page_follows_from_its_own_numbers():
    page = (DOCS / "thesis.md").read_text()
    assert page.startswith(HEADER + "\n")
    assert_page_follows_from_its_numbers(page, DOCS / "thesis" / "fit.json")


def assert_page_follows_from_its_numbers(page: str, fit_json: Path) -> None:
    """The fit table is fit.json's; the planner table is what `plan` gives for the fit and the target; each
    claim's verdict is what its table shows."""
    law = LossLaw(**json.loads(fit_json.read_text())["law"])
    for name, value in law.to_dict().items():
        assert f"| {name} | {value:.4g} |" in page
    target = float(re.search(r"Target: loss ([0-9.]+)", page)[1])
    rows = planner_rows(law, target)
    for row in rows:
        assert f"| {row['choice'].params:,.0f} | {row['choice'].tokens:,.0f} |" in page
    assert plan(law, target, 0.0).params == pytest.approx(rows[0]["choice"].params)

    smallest = _table_after(page, "## (a)", "| tokens | validation loss |")
    d_opt = float(re.search(r"compute-optimal, by the fit, at D = ([0-9.e+-]+) tokens", page)[1])
    nearest = min(smallest, key=lambda p: abs(math.log(p[0] / d_opt)))
    holds_a = (
        smallest[-1][1] < nearest[1] and smallest[-1][1] < smallest[-2][1] and smallest[-1][0] >= 2 * d_opt
    )
    assert ("The claim **holds**" in _section(page, "## (a)")) == holds_a
    smaller = any(r["choice"].params < 0.9 * rows[0]["choice"].params for r in rows[1:])
    assert ("The claim **holds**" in _section(page, "## (b)")) == smaller


def _section(page: str, heading: str) -> str:
    return page.split(heading, 1)[1].split("\n## ", 1)[0]


def _table_after(page: str, heading: str, header: str) -> list[tuple[float, float]]:
    lines = _section(page, heading).split(header, 1)[1].strip().splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        tokens, loss = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((float(tokens.replace(",", "")), float(loss)))
    return rows
