"""Cross-check with a peer harness: per-example acc and acc_norm equal lm-evaluation-harness's.

One HF model (random weights exported from our model), the same local files: lm-eval reads them through
the task configs `write_task_configs` writes (its own prompt code for HellaSwag), our harness through its
tasks. Our HF adapter must agree on every example; our own model code on every example whose tokens agree
(transformers' converted tokenizer splits runs of spaces differently from SentencePiece).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.lm_eval_tasks import write_task_configs

from llamafoundry.eval.hf_lm import HFCausalLM
from llamafoundry.eval.lm import LlamaFoundryLM
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig

LIMIT = 100  # per task: 300 examples, 1,300 loglikelihood requests
TASK_NAMES = ("hellaswag", "arc_easy", "piqa")
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def local_data(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """lm-eval task configs, and a data folder where HellaSwag is the original-schema jsonl."""
    root = tmp_path_factory.mktemp("crosscheck")
    write_task_configs(shared_data, root / "tasks")
    (root / "data/hellaswag").mkdir(parents=True)
    (root / "data/hellaswag/hellaswag_val.jsonl").symlink_to(
        shared_data / "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl"
    )
    for name in ("arc_easy", "piqa"):
        (root / "data" / name).symlink_to(shared_data / name)
    return {"tasks": root / "tasks", "data": root / "data"}


@pytest.fixture(scope="module")
def lm_eval_samples(local_data, model_folders) -> dict[str, list[dict]]:
    os.environ.update(OFFLINE)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    peer = HFLM(pretrained=str(model_folders["hf"]), device="cpu", dtype="float32", batch_size=32)
    out = lm_eval.simple_evaluate(
        model=peer,
        tasks=[f"local_{t}" for t in TASK_NAMES],
        limit=LIMIT,
        task_manager=TaskManager(include_path=str(local_data["tasks"])),
        log_samples=True,
    )
    return {t: sorted(out["samples"][f"local_{t}"], key=lambda s: s["doc_id"]) for t in TASK_NAMES}


def _scores(examples) -> list[tuple[float, float]]:
    return [(e["acc"], e["acc_norm"]) for e in examples]


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_NAMES)
def test_hf_adapter_equals_lm_eval_example_by_example(task, local_data, model_folders, lm_eval_samples):
    lm = HFCausalLM(str(model_folders["hf"]), batch_size=32)
    ours = TASKS[task].run(lm, local_data["data"], RunConfig(limit=LIMIT))
    theirs = lm_eval_samples[task]
    assert len(ours.examples) == len(theirs) == LIMIT
    assert _scores(ours.examples) == _scores(theirs)
    their_lls = [float(r[0]) for s in theirs for r in s["filtered_resps"]]
    assert [ll for e in ours.examples for ll in e["loglikelihoods"]] == pytest.approx(their_lls, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_NAMES)
def test_our_model_code_equals_lm_eval_where_tokens_agree(task, local_data, model_folders, lm_eval_samples):
    ours_lm, hf_lm = LlamaFoundryLM.from_path(model_folders["native"]), HFCausalLM(str(model_folders["hf"]))
    docs = TASKS[task].limit(TASKS[task].docs(local_data["data"]), LIMIT)
    same_tokens = [
        ours_lm.encode_pairs(TASKS[task].requests(d, "")) == hf_lm.encode_pairs(TASKS[task].requests(d, ""))
        for d in docs
    ]
    ours = TASKS[task].run(ours_lm, local_data["data"], RunConfig(limit=LIMIT))
    theirs = lm_eval_samples[task]
    assert sum(same_tokens) >= 0.8 * LIMIT
    assert [o for o, same in zip(_scores(ours.examples), same_tokens, strict=True) if same] == [
        t for t, same in zip(_scores(theirs), same_tokens, strict=True) if same
    ]


@pytest.mark.slow
def test_lm_eval_command_runs_our_model_type(tmp_path, local_data, model_folders):
    """The real `lm_eval` command with `--model llamafoundry` (registered by our .pth hook) scores our folder
    exactly as our harness does."""
    lm_eval_cli = Path(sys.executable).parent / "lm_eval"
    command = [
        str(lm_eval_cli),
        "--model",
        "llamafoundry",
        "--model_args",
        f"pretrained={model_folders['native']}",
        "--tasks",
        "local_arc_easy",
        "--include_path",
        str(local_data["tasks"]),
        "--limit",
        "20",
        "--batch_size",
        "8",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "local_arc_easy" in run.stdout and "acc_norm" in run.stdout
    samples_file = next((tmp_path / "out").rglob("samples_local_arc_easy_*.jsonl"))
    theirs = sorted((json.loads(line) for line in samples_file.open()), key=lambda s: s["doc_id"])
    ours = TASKS["arc_easy"].run(
        LlamaFoundryLM.from_path(model_folders["native"]), local_data["data"], RunConfig(limit=20)
    )
    assert _scores(ours.examples) == _scores(theirs)
