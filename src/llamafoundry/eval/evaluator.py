"""Run tasks on a model: `evaluate(lm, tasks, data_dir, config) -> [TaskResult]`, one progress bar per task."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import RunConfig, Task, TaskResult


def evaluate(
    lm: LM,
    tasks: Sequence[Task],
    data_dir: Path | None,
    config: RunConfig,
    shots: Sequence[int | None] = (None,),
) -> list[TaskResult]:
    """Each task at each shot count (None: the task's paper setting), in order. A task that cannot run
    (a missing file or scorer, an unreachable judge: a UserError) gets a result holding its error, and
    the other tasks still run."""
    results = []
    for task in tasks:
        for n in shots:
            start = time.perf_counter()
            try:
                result = task.run(lm, data_dir, dataclasses.replace(config, shots=n))
            except UserError as exc:
                shots_used = task.default_shots if n is None else n
                result = TaskResult(task.name, shots_used, {}, task.paper_metric, error=str(exc))
            result.seconds = round(time.perf_counter() - start, 3)
            results.append(result)
    return results
