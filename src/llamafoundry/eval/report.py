"""Reports: a JSON file with every example's scores, and a markdown table beside the paper's numbers.

Paper numbers are Touvron et al. (2023), Tables 3-9 (accuracy / exact match / pass@k in %); GPT-3 175B
where the paper lists it. Section 5's tables (bias) compare other models, so they get a table of their
own whose paper column names each model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from llamafoundry import fileio
from llamafoundry.eval.tasks.base import TaskResult

MODELS = ("LLaMA-7B", "LLaMA-13B", "LLaMA-33B", "LLaMA-65B", "GPT-3")
# (task, shots, metric) -> one number per MODELS entry.
PAPER: dict[tuple[str, int, str], tuple[float | None, ...]] = {
    # Table 3, zero-shot common sense reasoning.
    ("boolq", 0, "acc_answer"): (76.5, 78.1, 83.1, 85.3, 60.5),
    ("piqa", 0, "acc_norm"): (79.8, 80.1, 82.3, 82.8, 81.0),
    ("siqa", 0, "acc_norm"): (48.9, 50.4, 50.4, 52.3, None),
    ("hellaswag", 0, "acc_norm"): (76.1, 79.2, 82.8, 84.2, 78.9),
    ("winogrande", 0, "acc"): (70.1, 73.0, 76.0, 77.0, 70.2),
    ("arc_easy", 0, "acc_norm"): (72.8, 74.8, 80.0, 78.9, 68.8),
    ("arc_challenge", 0, "acc_norm"): (47.6, 52.7, 57.8, 56.0, 51.4),
    ("openbookqa", 0, "acc_answer"): (57.2, 56.4, 58.6, 60.2, 57.6),
    # Tables 4 and 5, closed-book exact match.
    ("nq_open", 0, "em"): (16.8, 20.1, 24.9, 23.8, 14.6),
    ("nq_open", 1, "em"): (18.7, 23.4, 28.3, 31.0, 23.0),
    ("nq_open", 5, "em"): (22.0, 28.1, 32.9, 35.0, None),
    ("nq_open", 64, "em"): (26.1, 31.9, 36.0, 39.9, 29.9),
    ("triviaqa", 0, "em"): (50.0, 56.6, 65.1, 68.2, None),
    ("triviaqa", 1, "em"): (53.4, 60.5, 67.9, 71.6, None),
    ("triviaqa", 5, "em"): (56.3, 63.1, 69.9, 72.6, None),
    ("triviaqa", 64, "em"): (57.6, 64.0, 70.4, 73.0, None),
    # Table 6, reading comprehension.
    ("race_middle", 0, "acc_norm"): (61.1, 61.6, 64.1, 67.9, 58.4),
    ("race_high", 0, "acc_norm"): (46.9, 47.2, 48.3, 51.6, 45.5),
    # Table 7, quantitative reasoning.
    ("gsm8k", 8, "acc"): (11.0, 17.8, 35.6, 50.9, None),
    ("gsm8k", 8, "maj1@100"): (18.1, 29.3, 53.1, 69.7, None),
    ("math", 4, "acc"): (2.9, 3.9, 7.1, 10.6, None),
    ("math", 4, "maj1@256"): (6.9, 8.8, 15.2, 20.5, None),
    # Table 8, code generation.
    ("humaneval", 0, "pass@1"): (10.5, 15.8, 21.7, 23.7, None),
    ("humaneval", 0, "pass@100"): (36.5, 52.5, 70.7, 79.3, None),
    ("mbpp", 3, "pass@1"): (17.7, 22.0, 30.2, 37.7, None),
    ("mbpp", 3, "pass@80"): (56.2, 64.0, 73.4, 76.8, None),
    # Table 9, MMLU five-shot.
    ("mmlu", 5, "acc"): (35.1, 46.9, 57.8, 63.4, 43.9),
    ("mmlu", 5, "Humanities"): (34.0, 45.0, 55.8, 61.8, 40.8),
    ("mmlu", 5, "STEM"): (30.5, 35.8, 46.0, 51.7, 36.7),
    ("mmlu", 5, "Social Sciences"): (38.3, 53.8, 66.7, 72.9, 50.4),
    ("mmlu", 5, "Other"): (38.1, 53.3, 63.4, 67.4, 48.8),
}


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
    failed = [f"- {r.task} ({r.shots}-shot) did not run: {r.error}" for r in results if r.error]
    if failed:
        parts.append("\n".join(["Failed:", "", *failed]) + "\n")
    return "\n".join(parts)


def _benchmark_table(results: Sequence[TaskResult], model: str) -> str:
    lines = [
        f"Evaluation of `{model}` (ours) beside Touvron et al. (2023), Tables 3-9.",
        "",
        "| task | shots | metric | n | ours | " + " | ".join(MODELS) + " |",
        "|---|---|---|---|---|" + "---|" * len(MODELS),
    ]
    paper_metrics = {(r.task, r.shots): r.paper_metric for r in results}
    for task, shots, metric, value, n in rows(results):
        paper = PAPER.get((task, shots, metric))
        mark = "*" if paper_metrics[(task, shots)] == metric else ""
        cells = [f"{v:.1f}" if v is not None else "-" for v in paper] if paper else ["-"] * len(MODELS)
        lines.append(
            f"| {task} | {shots} | {metric}{mark} | {n} | {100 * value:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _fewshot_sources(results: Sequence[TaskResult]) -> str:
    """Where each few-shot run took its examples from (zero-shot runs have none); "" when none did."""
    lines = [f"- {r.task} ({r.shots}-shot): {r.fewshot_source}" for r in results if r.fewshot_source]
    return "\n".join(["Few-shot examples from:", "", *lines]) + "\n" if lines else ""


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
