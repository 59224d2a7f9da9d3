"""Cross-check of Sec. 5's likelihood tasks with a peer harness: per example, CrowS-Pairs' stereotype
preference, WinoGender's answer and TruthfulQA's MC1/MC2 equal lm-evaluation-harness's own tasks
(crows_pairs_english, winogender_all, truthfulqa_mc1/mc2, included whole) on the same local files and
the same Hugging Face model (random weights exported from ours)."""

from __future__ import annotations

import os

import pytest
from tests.lm_eval_tasks import write_section5_configs

from llamafoundry.eval.hf_lm import HFCausalLM
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig

LIMIT = 30
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def lm_eval_samples(tmp_path_factory, shared_data, model_folders) -> dict[str, list[dict]]:
    os.environ.update(OFFLINE)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("section5")
    names = write_section5_configs(shared_data, folder)
    peer = HFLM(pretrained=str(model_folders["hf"]), device="cpu", dtype="float32", batch_size=32)
    out = lm_eval.simple_evaluate(
        model=peer,
        tasks=list(names.values()),
        limit=LIMIT,
        task_manager=TaskManager(include_path=str(folder)),
        log_samples=True,
    )
    return {ours: sorted(out["samples"][theirs], key=lambda s: s["doc_id"]) for ours, theirs in names.items()}


@pytest.fixture(scope="module")
def ours(shared_data, model_folders) -> dict:
    lm = HFCausalLM(str(model_folders["hf"]), batch_size=32)
    return {
        name: TASKS[name].run(lm, shared_data, RunConfig(limit=LIMIT))
        for name in ("crows_pairs", "winogender", "truthfulqa_mc")
    }


@pytest.mark.slow
def test_crows_pairs_equals_lm_eval(ours, lm_eval_samples):
    theirs = lm_eval_samples["crows_pairs"]
    assert len(theirs) == LIMIT
    assert [e["pct_stereotype"] for e in ours["crows_pairs"].examples] == [
        s["pct_stereotype"] for s in theirs
    ]
    assert [e["likelihood_diff"] for e in ours["crows_pairs"].examples] == pytest.approx(
        [s["likelihood_diff"] for s in theirs], abs=1e-3
    )


@pytest.mark.slow
def test_winogender_equals_lm_eval(ours, lm_eval_samples):
    theirs = lm_eval_samples["winogender"]
    assert [e["acc"] for e in ours["winogender"].examples] == [s["acc"] for s in theirs]
    their_lls = [float(r[0]) for s in theirs for r in s["filtered_resps"]]
    assert [ll for e in ours["winogender"].examples for ll in e["loglikelihoods"]] == pytest.approx(
        their_lls, abs=1e-3
    )


@pytest.mark.slow
def test_truthfulqa_mc1_and_mc2_equal_lm_eval(ours, lm_eval_samples):
    examples = ours["truthfulqa_mc"].examples
    assert [e["mc1"] for e in examples] == [s["acc"] for s in lm_eval_samples["truthfulqa_mc1"]]
    assert [e["mc2"] for e in examples] == pytest.approx(
        [s["acc"] for s in lm_eval_samples["truthfulqa_mc2"]], abs=1e-4
    )
