"""The paper's benchmarks by name, and lm-evaluation-harness's `--tasks` syntax to pick them.

`--tasks` takes a comma-separated list of task names, group names and shell-style patterns
(`arc_*`, `race_*`), as lm-evaluation-harness does; its task names (`social_iqa`, `nq_open`, ...) work.
"""

from __future__ import annotations

import fnmatch

from llamafoundry.errors import UserError
from llamafoundry.eval.tasks.base import Task
from llamafoundry.eval.tasks.closed_book_qa import CLOSED_BOOK_QA
from llamafoundry.eval.tasks.code import CODE_TASKS
from llamafoundry.eval.tasks.commonsense import COMMONSENSE
from llamafoundry.eval.tasks.math import MATH_TASKS
from llamafoundry.eval.tasks.mmlu import MMLU_TASKS
from llamafoundry.eval.tasks.reading import READING

TASKS: dict[str, Task] = {
    t.name: t for t in COMMONSENSE + CLOSED_BOOK_QA + READING + MATH_TASKS + CODE_TASKS + MMLU_TASKS
}
GROUPS: dict[str, list[str]] = {
    "commonsense": [t.name for t in COMMONSENSE],  # Table 3
    "closed_book_qa": [t.name for t in CLOSED_BOOK_QA],  # Tables 4-5
    "race": [t.name for t in READING],  # Table 6
    "math_reasoning": [t.name for t in MATH_TASKS],  # Table 7 (the task "math" is MATH alone)
    "code": [t.name for t in CODE_TASKS],  # Table 8
    "paper": list(TASKS),
}
ALIASES = {
    "social_iqa": "siqa",
    "arc_e": "arc_easy",
    "arc_c": "arc_challenge",
    "obqa": "openbookqa",
    "naturalquestions": "nq_open",
    "nq": "nq_open",
    "hendrycks_math": "math",
    "minerva_math": "math",
    "hendrycks_test": "mmlu",
}


def resolve_tasks(spec: str) -> list[Task]:
    """Tasks named by a --tasks value, in the order given, each once."""
    names: list[str] = []
    for item in (part.strip().lower() for part in spec.split(",")):
        if not item:
            continue
        item = ALIASES.get(item, item)
        if item in TASKS:
            matched = [item]
        elif item in GROUPS:
            matched = GROUPS[item]
        else:
            matched = fnmatch.filter(TASKS, item)
        if not matched:
            raise UserError(
                f"unknown task {item!r}; known tasks: {', '.join(TASKS)}; groups: {', '.join(GROUPS)}"
            )
        names += [n for n in matched if n not in names]
    if not names:
        raise UserError(
            "no tasks given; pass --tasks, e.g. --tasks hellaswag,arc_easy or --tasks commonsense"
        )
    return [TASKS[n] for n in names]
