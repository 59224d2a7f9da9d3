"""Evaluation with the paper's protocols (Sec. 3): tasks, the scoring interface, the runner and reports.

`evaluate(LlamaFoundryLM.from_path(folder), resolve_tasks("commonsense"), data_dir, RunConfig())`
runs what `llamafoundry eval` runs. The names below load their module on first use (see
`llamafoundry._exports`): lm-eval's hook imports this package in every Python process of the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamafoundry._exports import lazy_exports

if TYPE_CHECKING:
    from llamafoundry.eval.evaluator import evaluate
    from llamafoundry.eval.lm import LM, LlamaFoundryLM
    from llamafoundry.eval.tasks import TASKS, resolve_tasks
    from llamafoundry.eval.tasks.base import RunConfig, Task, TaskResult

_MODULE_OF = {
    "evaluate": "evaluator",
    "LM": "lm",
    "LlamaFoundryLM": "lm",
    "TASKS": "tasks",
    "resolve_tasks": "tasks",
    "RunConfig": "tasks.base",
    "Task": "tasks.base",
    "TaskResult": "tasks.base",
}

__all__ = [
    "LM",
    "LlamaFoundryLM",
    "RunConfig",
    "TASKS",
    "Task",
    "TaskResult",
    "evaluate",
    "resolve_tasks",
]

__getattr__ = lazy_exports(__name__, _MODULE_OF)
