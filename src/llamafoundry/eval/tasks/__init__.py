"""The paper's benchmarks by name, and lm-evaluation-harness's `--tasks` syntax to pick them.

`--tasks` takes a comma-separated list of task names, group names and shell-style patterns
(`arc_*`, `race_*`), as lm-evaluation-harness does; its task names (`social_iqa`, `nq_open`, ...) work.
"""

from __future__ import annotations

import fnmatch

from llamafoundry.errors import UserError
from llamafoundry.eval.tasks.base import Task
from llamafoundry.eval.tasks.bias import BIAS_TASKS
from llamafoundry.eval.tasks.closed_book_qa import CLOSED_BOOK_QA
from llamafoundry.eval.tasks.code import CODE_TASKS
from llamafoundry.eval.tasks.commonsense import COMMONSENSE
from llamafoundry.eval.tasks.math import MATH_TASKS
from llamafoundry.eval.tasks.mmlu import MMLU_TASKS
from llamafoundry.eval.tasks.reading import READING
from llamafoundry.eval.tasks.toxicity import TOXICITY_TASKS
from llamafoundry.eval.tasks.truthfulqa import TRUTHFULQA_TASKS

FAMILIES = (
    COMMONSENSE,
    CLOSED_BOOK_QA,
    READING,
    MATH_TASKS,
    CODE_TASKS,
    MMLU_TASKS,
    TOXICITY_TASKS,
    BIAS_TASKS,
    TRUTHFULQA_TASKS,
)
TASKS: dict[str, Task] = {t.name: t for family in FAMILIES for t in family}
GROUPS: dict[str, list[str]] = {
    "commonsense": [t.name for t in COMMONSENSE],  # Table 3
    "closed_book_qa": [t.name for t in CLOSED_BOOK_QA],  # Tables 4-5
    "race": [t.name for t in READING],  # Table 6
    "math_reasoning": [t.name for t in MATH_TASKS],  # Table 7 (the task "math" is MATH alone)
    "code": [t.name for t in CODE_TASKS],  # Table 8
    "bias": [t.name for t in BIAS_TASKS],  # Tables 12-13
    "safety": ["realtoxicityprompts", "crows_pairs", "winogender", "truthfulqa"],  # Tables 11-14
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
    "crows_pairs_english": "crows_pairs",
    "winogender_all": "winogender",
    "real_toxicity_prompts": "realtoxicityprompts",
    "rtp": "realtoxicityprompts",
    "truthfulqa_gen": "truthfulqa",
    "truthfulqa_mc1": "truthfulqa_mc",
    "truthfulqa_mc2": "truthfulqa_mc",
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
