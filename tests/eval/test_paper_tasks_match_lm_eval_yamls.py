"""Table 3's tasks against lm-evaluation-harness's own task YAMLs (their prompts, choices, metrics and
HellaSwag's `preprocess`), on the same rows of the shared files, scored by our model type through lm-eval
(`--model llamafoundry`): every pick of every rule lm-eval reports equals our evaluator's.
`benchmarks/eval_matches_lm_eval_tasks.py` runs the same comparison on more rows (200 per task)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.lm_eval_tasks import PAPER_TASK_YAMLS, lm_eval_picks, write_paper_task_configs

from llamafoundry.eval.lm import LlamaFoundryLM
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig

ROWS = 20  # per task: 140 examples, 400 loglikelihood requests
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def lm_eval_picked(tmp_path_factory, shared_data: Path, model_folders) -> dict[str, list[dict]]:
    os.environ.update(OFFLINE)
    folder = tmp_path_factory.mktemp("paper_tasks")
    names = write_paper_task_configs(shared_data, folder)
    return lm_eval_picks(model_folders["native"], folder, names, ROWS)


@pytest.fixture(scope="module")
def our_lm(model_folders) -> LlamaFoundryLM:
    return LlamaFoundryLM.from_path(model_folders["native"])


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(PAPER_TASK_YAMLS))
def test_our_picks_equal_lm_evals_own_task_yamls(task: str, shared_data: Path, our_lm, lm_eval_picked):
    ours = TASKS[task].run(our_lm, shared_data, RunConfig(limit=ROWS)).examples
    theirs = lm_eval_picked[task]
    assert len(ours) == len(theirs) == ROWS
    assert [
        {m: (e[f"pred_{m}"], e[m]) for m in picks} for e, picks in zip(ours, theirs, strict=True)
    ] == theirs
