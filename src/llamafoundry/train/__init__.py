"""Pretraining (Sec. 2.3-2.4): run recipes, the Trainer and its loop, the optimiser, parallelism, planning.

The names below load their module on first use (see `llamafoundry._exports`): `llamafoundry plan`
imports train/plan.py at every command-line start, which should not pay for torch and the data pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamafoundry._exports import lazy_exports

if TYPE_CHECKING:
    from llamafoundry.train.optim import OptimConfig, Schedule
    from llamafoundry.train.recipe import RunRecipe, load_run_recipe
    from llamafoundry.train.trainer import Trainer, TrainResult, ValidateHook, train

_MODULE_OF = {
    "OptimConfig": "optim",
    "Schedule": "optim",
    "RunRecipe": "recipe",
    "load_run_recipe": "recipe",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "ValidateHook": "trainer",
    "train": "trainer",
}

__all__ = [
    "OptimConfig",
    "RunRecipe",
    "Schedule",
    "TrainResult",
    "Trainer",
    "ValidateHook",
    "load_run_recipe",
    "train",
]


__getattr__ = lazy_exports(__name__, _MODULE_OF)
