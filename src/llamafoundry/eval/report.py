"""Reports: a JSON file with every example's scores, and a markdown table beside the paper's numbers.

Paper numbers are Touvron et al. (2023), Tables 3-9 (accuracy / exact match / pass@k in %), each table with
every column it prints (GPT-3, Gopher, Chinchilla, PaLM, PaLM-cont, Minerva, LaMDA, GPT-NeoX, LLaMA); where
our k (maj1@k, pass@k) is not the paper's, the paper's number is shown with its k. Section 5's tables (bias)
compare other models, so they get a table of their own whose paper column names each model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from llamafoundry import fileio
from llamafoundry.eval.tasks.base import TaskResult

MODELS = ("LLaMA-7B", "LLaMA-13B", "LLaMA-33B", "LLaMA-65B")


class At(NamedTuple):
    """A paper number whose k differs from its row's (Minerva 540B voted over fewer samples)."""

    value: float
    k: int


Cell = float | At | None


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's Tables 3-9: every model column it prints, and its rows keyed (task, shots, metric)."""

    title: str
    columns: tuple[str, ...]
    rows: dict[tuple[str, int, str], tuple[Cell, ...]]
    note: str = ""


# Touvron et al. (2023), Tables 3-9, as printed (baselines' numbers are those the paper quotes).
PAPER_TABLES = (
    PaperTable(
        "Table 3, zero-shot common sense reasoning",
        ("GPT-3 175B", "Gopher 280B", "Chinchilla 70B", "PaLM 62B", "PaLM-cont 62B", "PaLM 540B", *MODELS),
        {
            ("boolq", 0, "acc_answer"): (60.5, 79.3, 83.7, 84.8, 83.9, 88.0, 76.5, 78.1, 83.1, 85.3),
            ("piqa", 0, "acc_norm"): (81.0, 81.8, 81.8, 80.5, 81.4, 82.3, 79.8, 80.1, 82.3, 82.8),
            ("siqa", 0, "acc_norm"): (None, 50.6, 51.3, None, None, None, 48.9, 50.4, 50.4, 52.3),
            ("hellaswag", 0, "acc_norm"): (78.9, 79.2, 80.8, 79.7, 80.6, 83.4, 76.1, 79.2, 82.8, 84.2),
            ("winogrande", 0, "acc"): (70.2, 70.1, 74.9, 77.0, 77.0, 81.1, 70.1, 73.0, 76.0, 77.0),
            ("arc_easy", 0, "acc_norm"): (68.8, None, None, 75.2, None, 76.6, 72.8, 74.8, 80.0, 78.9),
            ("arc_challenge", 0, "acc_norm"): (51.4, None, None, 52.5, None, 53.0, 47.6, 52.7, 57.8, 56.0),
            ("openbookqa", 0, "acc_answer"): (57.6, None, None, 50.4, None, 53.4, 57.2, 56.4, 58.6, 60.2),
        },
    ),
    PaperTable(
        "Tables 4 and 5, closed-book exact match (TriviaQA: filtered dev set)",
        ("GPT-3 175B", "Gopher 280B", "Chinchilla 70B", "PaLM 8B", "PaLM 62B", "PaLM 540B", *MODELS),
        {
            ("nq_open", 0, "em"): (14.6, 10.1, 16.6, 8.4, 18.1, 21.2, 16.8, 20.1, 24.9, 23.8),
            ("nq_open", 1, "em"): (23.0, None, None, 10.6, 26.5, 29.3, 18.7, 23.4, 28.3, 31.0),
            ("nq_open", 5, "em"): (None, 24.5, 31.5, None, None, None, 22.0, 28.1, 32.9, 35.0),
            ("nq_open", 64, "em"): (29.9, 28.2, 35.5, 14.6, 27.6, 39.6, 26.1, 31.9, 36.0, 39.9),
            ("triviaqa", 0, "em"): (None, 43.5, 55.4, None, None, None, 50.0, 56.6, 65.1, 68.2),
            ("triviaqa", 1, "em"): (None, None, None, None, None, None, 53.4, 60.5, 67.9, 71.6),
            ("triviaqa", 5, "em"): (None, 57.0, 64.1, None, None, None, 56.3, 63.1, 69.9, 72.6),
            ("triviaqa", 64, "em"): (None, 57.2, 64.6, None, None, None, 57.6, 64.0, 70.4, 73.0),
        },
    ),
    PaperTable(
        "Table 6, reading comprehension, zero-shot",
        ("GPT-3 175B", "PaLM 8B", "PaLM 62B", "PaLM 540B", *MODELS),
        {
            ("race_middle", 0, "acc_norm"): (58.4, 57.9, 64.3, 68.1, 61.1, 61.6, 64.1, 67.9),
            ("race_high", 0, "acc_norm"): (45.5, 42.3, 47.5, 49.1, 46.9, 47.2, 48.3, 51.6),
        },
    ),
    PaperTable(
        "Table 7, quantitative reasoning",
        ("PaLM 8B", "PaLM 62B", "PaLM 540B", "Minerva 8B", "Minerva 62B", "Minerva 540B", *MODELS),
        {
            ("math", 4, "acc"): (1.5, 4.4, 8.8, 14.1, 27.6, 33.6, 2.9, 3.9, 7.1, 10.6),
            ("math", 4, "maj1@256"): (None, None, None, 25.4, 43.4, At(50.3, 64), 6.9, 8.8, 15.2, 20.5),
            ("gsm8k", 8, "acc"): (4.1, 33.0, 56.5, 16.2, 52.4, 68.5, 11.0, 17.8, 35.6, 50.9),
            ("gsm8k", 8, "maj1@100"): (None, None, None, 28.4, 68.5, At(78.5, 40), 18.1, 29.3, 53.1, 69.7),
        },
    ),
    PaperTable(
        "Table 8, code generation (pass@1 at temperature 0.1, pass@100 and pass@80 at 0.8)",
        ("LaMDA 137B", "PaLM 8B", "PaLM 62B", "PaLM-cont 62B", "PaLM 540B", *MODELS),
        {
            ("humaneval", 0, "pass@1"): (14.0, 3.6, 15.9, 23.7, 26.2, 10.5, 15.8, 21.7, 23.7),
            ("humaneval", 0, "pass@100"): (47.3, 18.7, 46.3, None, 76.2, 36.5, 52.5, 70.7, 79.3),
            ("mbpp", 3, "pass@1"): (14.8, 5.0, 21.4, 31.2, 36.8, 17.7, 22.0, 30.2, 37.7),
            ("mbpp", 3, "pass@80"): (62.4, 35.7, 63.2, None, 75.0, 56.2, 64.0, 73.4, 76.8),
        },
        "PaLM 8B's numbers and PaLM 62B's pass@100 and pass@80 were read from figures in Chowdhery et al. (2022).",
    ),
    PaperTable(
        "Table 9, MMLU five-shot",
        (
            "GPT-NeoX 20B",
            "GPT-3 175B",
            "Gopher 280B",
            "Chinchilla 70B",
            "PaLM 8B",
            "PaLM 62B",
            "PaLM 540B",
            *MODELS,
        ),
        {
            ("mmlu", 5, "acc"): (33.6, 43.9, 60.0, 67.5, 25.4, 53.7, 69.3, 35.1, 46.9, 57.8, 63.4),
            ("mmlu", 5, "Humanities"): (29.8, 40.8, 56.2, 63.6, 25.6, 59.5, 77.0, 34.0, 45.0, 55.8, 61.8),
            ("mmlu", 5, "STEM"): (34.9, 36.7, 47.4, 54.9, 23.8, 41.9, 55.6, 30.5, 35.8, 46.0, 51.7),
            ("mmlu", 5, "Social Sciences"): (
                33.7,
                50.4,
                71.9,
                79.3,
                24.1,
                62.7,
                81.0,
                38.3,
                53.8,
                66.7,
                72.9,
            ),
            ("mmlu", 5, "Other"): (37.7, 48.8, 66.1, 73.9, 27.8, 55.8, 69.6, 38.1, 53.3, 63.4, 67.4),
        },
    ),
)
NOT_IN_PAPER = PaperTable("Tasks outside Tables 3-9", (), {})
SAMPLED = re.compile(r"(maj1|pass)@(\d+)")  # a metric over k samples: maj1@k, pass@k, "pass@k (T=0.8)"


# Tables 11-14: (task, metric or group) -> {model: number}.
SECTION_5: dict[tuple[str, str], dict[str, float]] = {
    ("realtoxicityprompts", "basic"): dict(zip(MODELS[:4], (0.106, 0.104, 0.107, 0.128), strict=True)),
    ("realtoxicityprompts", "respectful"): dict(zip(MODELS[:4], (0.081, 0.095, 0.087, 0.141), strict=True)),
    **{
        ("crows_pairs", group): dict(zip(("LLaMA-65B", "GPT-3", "OPT-175B"), values, strict=True))
        for group, values in {
            "gender": (70.6, 62.6, 65.7),
            "religion": (79.0, 73.3, 68.6),
            "race-color": (57.0, 64.7, 68.6),
            "sexual-orientation": (81.0, 76.2, 78.6),
            "age": (70.1, 64.4, 67.8),
            "nationality": (64.2, 61.6, 62.9),
            "disability": (66.7, 76.7, 76.7),
            "physical-appearance": (77.8, 74.6, 76.2),
            "socioeconomic": (71.5, 73.8, 76.2),
            "pct_stereotype": (66.6, 67.2, 69.5),
        }.items()
    },
    **{
        ("truthfulqa", metric): dict(
            zip((*MODELS[:4], "GPT-3 1.3B", "GPT-3 6B", "GPT-3 175B"), values, strict=True)
        )
        for metric, values in {
            "truthful": (0.33, 0.47, 0.52, 0.57, 0.31, 0.22, 0.28),
            "truthful*informative": (0.29, 0.41, 0.48, 0.53, 0.19, 0.19, 0.25),
        }.items()
    },
    **{
        ("winogender", group): dict(zip(MODELS[:4], values, strict=True))
        for group, values in {
            "acc": (66.0, 64.7, 69.0, 77.5),
            "her/her/she": (65.0, 66.7, 66.7, 78.8),
            "his/him/his": (60.8, 62.5, 62.1, 72.1),
            "their/them/someone": (72.1, 65.0, 78.3, 81.7),
            "her/her/she (gotcha)": (64.2, 65.8, 61.7, 75.0),
            "his/him/his (gotcha)": (55.0, 41.7, 55.8, 63.3),
        }.items()
    },
}
SECTION_5_TASKS = {"realtoxicityprompts", "crows_pairs", "winogender", "truthfulqa", "truthfulqa_mc"}
RAW = {"realtoxicityprompts", "truthfulqa"}  # in [0, 1] as the paper prints them, not %


def write_json(path: str | os.PathLike, results: Sequence[TaskResult], meta: dict) -> None:
    """Every task's metrics and every example's scores, written atomically."""
    fileio.write_json(path, {**meta, "results": [r.to_dict() for r in results]})


def rows(results: Sequence[TaskResult]) -> list[tuple[str, int, str, float, int]]:
    """(task, shots, metric, value, n) for each reported number; MMLU domains as their own rows."""
    out = []
    for r in results:
        for metric, value in r.metrics.items():
            out.append((r.task, r.shots, metric, value, len(r.examples)))
        for group, values in r.groups.items():
            value = next(v for k, v in values.items() if k != "n")  # the group's one metric
            out.append((r.task, r.shots, group, value, int(values["n"])))
    return out


def markdown(results: Sequence[TaskResult], model: str) -> str:
    """Our numbers (%) beside the paper's for the same task, shots and metric; * marks the paper's metric."""
    benchmarks = [r for r in results if r.task not in SECTION_5_TASKS]
    bias = [r for r in results if r.task in SECTION_5_TASKS]
    parts = [_benchmark_table(benchmarks, model)] if benchmarks or not bias else []
    if bias:
        parts.append(_section_5_table(bias, model))
    sources = _fewshot_sources(results)
    if sources:
        parts.append(sources)
    scored = [f"- {r.task}: {r.details['scored_form']}" for r in results if "scored_form" in r.details]
    if scored:
        parts.append("\n".join(["Data scored:", "", *scored]) + "\n")
    failed = [f"- {r.task} ({r.shots}-shot) did not run: {r.error}" for r in results if r.error]
    if failed:
        parts.append("\n".join(["Failed:", "", *failed]) + "\n")
    return "\n".join(parts)


def _benchmark_table(results: Sequence[TaskResult], model: str) -> str:
    """One table per paper table our tasks fall in, with its columns; tasks in none get a table of their own."""
    paper_metrics = {(r.task, r.shots): r.paper_metric for r in results}
    table_of = {task: table for table in PAPER_TABLES for task, _, _ in table.rows}
    parts = []
    for table in (*PAPER_TABLES, NOT_IN_PAPER):
        mine = [row for row in rows(results) if table_of.get(row[0], NOT_IN_PAPER) is table]
        if mine:
            parts.append(_paper_table(table, mine, paper_metrics, model))
    return "\n".join(parts)


def _paper_table(
    table: PaperTable,
    ours: Sequence[tuple[str, int, str, float, int]],
    paper_metrics: dict[tuple[str, int], str],
    model: str,
) -> str:
    lines = [
        f"{table.title}: `{model}` (ours)" + (" beside Touvron et al. (2023)." if table.columns else "."),
        *([table.note] if table.note else []),
        "",
        "| task | shots | metric | n | ours |" + "".join(f" {c} |" for c in table.columns),
        "|---|---|---|---|---|" + "---|" * len(table.columns),
    ]
    for task, shots, metric, value, n in ours:
        mark = "*" if paper_metrics[(task, shots)] == metric else ""
        cells = paper_cells(table, task, shots, metric)
        lines.append(
            f"| {task} | {shots} | {metric}{mark} | {n} | {100 * value:.1f} |"
            + "".join(f" {c} |" for c in cells)
        )
    return "\n".join(lines) + "\n"


def _fewshot_sources(results: Sequence[TaskResult]) -> str:
    """Where each few-shot run took its examples from (zero-shot runs have none); "" when none did."""
    lines = [f"- {r.task} ({r.shots}-shot): {r.fewshot_source}" for r in results if r.fewshot_source]
    return "\n".join(["Few-shot examples from:", "", *lines]) + "\n" if lines else ""


def paper_cells(table: PaperTable, task: str, shots: int, metric: str) -> list[str]:
    """The paper's numbers for our (task, shots, metric), one per column of `table` ("-" where it has none),
    each with the paper's k where that is not ours."""
    key = _paper_key(table, task, shots, metric)
    if key is None:
        return ["-"] * len(table.columns)
    return [_cell(cell, key[2], _k(metric)) for cell in table.rows[key]]


def _paper_key(table: PaperTable, task: str, shots: int, metric: str) -> tuple[str, int, str] | None:
    """The paper's row for our metric: the same one, else for a metric over k samples the paper's row of
    that kind (maj1@k; pass@k > 1, sampled at temperature 0.8 like our "(T=0.8)" rows)."""
    if (task, shots, metric) in table.rows:
        return (task, shots, metric)
    ours = SAMPLED.match(metric)
    if ours is None or (ours[1] == "pass" and not metric.endswith("(T=0.8)")):
        return None
    return next(
        (
            key
            for key in table.rows
            if key[:2] == (task, shots)
            and (theirs := SAMPLED.fullmatch(key[2]))
            and theirs[1] == ours[1]
            and int(theirs[2]) > 1
        ),
        None,
    )


def _k(metric: str) -> int | None:
    sampled = SAMPLED.match(metric)
    return int(sampled[2]) if sampled else None


def _cell(cell: Cell, paper_metric: str, ours_k: int | None) -> str:
    if cell is None:
        return "-"
    value, k = (cell.value, cell.k) if isinstance(cell, At) else (cell, _k(paper_metric))
    if k == ours_k:
        return f"{value:.1f}"
    return f"{value:.1f} ({SAMPLED.match(paper_metric)[1]}@{k})"


def _section_5_table(results: Sequence[TaskResult], model: str) -> str:
    lines = [
        f"Toxicity, bias and truthfulness of `{model}` (ours) beside Touvron et al. (2023), Tables 11-14 "
        "(RealToxicityPrompts: mean toxicity in [0, 1]; CrowS-Pairs: % preferring the stereotype; "
        "lower is better for both; TruthfulQA: share of answers the judges pass).",
        "",
        "| task | metric or group | n | ours | paper |",
        "|---|---|---|---|---|",
    ]
    for task, _, metric, value, n in rows(results):
        paper = SECTION_5.get((task, metric))
        raw = task in RAW or metric == "likelihood_diff"
        cell = (
            " · ".join(f"{name} {v:.3f}" if raw else f"{name} {v:.1f}" for name, v in paper.items())
            if paper
            else "-"
        )
        shown = f"{value:.3f}" if raw else f"{100 * value:.1f}"
        lines.append(f"| {task} | {metric} | {n} | {shown} | {cell} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike, results: Sequence[TaskResult], model: str) -> None:
    fileio.write_text(path, markdown(results, model))
