"""MMLU's prompts are exactly those of Hendrycks' evaluate.py (github.com/hendrycks/test), rebuilt here from
that script's logic over the raw CSV rows: the header from `gen_prompt` and `format_subject`, the subject's
first five dev examples in file order, then the question, scored by the log-probability of " A" .. " D"."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from llamafoundry.errors import UserError
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig

CHOICES = ["A", "B", "C", "D"]
# Two-word names, questions with a leading space (formal_logic's dev) and a trailing newline (nutrition's dev).
SUBJECTS = ("formal_logic", "nutrition", "us_foreign_policy")


# ---- evaluate.py's functions, over CSV rows (question, A, B, C, D, letter) instead of a DataFrame ----------
def format_subject(subject: str) -> str:
    s = ""
    for entry in subject.split("_"):
        s += " " + entry
    return s


def format_example(row: list[str], include_answer: bool = True) -> str:
    prompt = row[0]
    for j in range(len(row) - 2):
        prompt += f"\n{CHOICES[j]}. {row[j + 1]}"
    prompt += "\nAnswer:"
    if include_answer:
        prompt += f" {row[-1]}\n\n"
    return prompt


def gen_prompt(dev_rows: list[list[str]], subject: str, k: int) -> str:
    prompt = (
        f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"
    )
    for i in range(k):
        prompt += format_example(dev_rows[i])
    return prompt


def hendrycks_rows(path: Path) -> list[list[str]]:
    """The shared files' rows in Hendrycks' layout (their header dropped, answers 0-3 as letters)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [row[:5] + [CHOICES[int(row[5])]] for row in rows]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_mmlu_prompts_are_hendrycks_evaluate_py(subject: str, shared_data: Path, scripted):
    task = TASKS["mmlu"]
    docs = [d for d in task.docs(shared_data) if d["subject"] == subject][:4]
    lm = scripted(score=lambda context, continuation: 0.0)
    task.evaluate(lm, docs, task.fewshot_pool(shared_data), RunConfig())

    dev = hendrycks_rows(shared_data / f"mmlu/dev/{subject}_dev.csv")
    test = hendrycks_rows(shared_data / f"mmlu/test/{subject}_test.csv")
    expected = [
        (gen_prompt(dev, subject, 5) + format_example(row, include_answer=False), f" {letter}")
        for row in test[:4]
        for letter in CHOICES
    ]
    assert lm.ll_requests == expected


def test_more_mmlu_shots_than_dev_examples_is_a_user_error(shared_data: Path, scripted):
    task = TASKS["mmlu"]
    doc = task.docs(shared_data)[0]
    with pytest.raises(UserError, match="6 shots asked but abstract_algebra has only 5 dev examples"):
        task.evaluate(
            scripted(score=lambda c, x: 0.0), [doc], task.fewshot_pool(shared_data), RunConfig(shots=6)
        )
