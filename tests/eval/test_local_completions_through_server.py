"""lm-evaluation-harness's `local-completions` model (an OpenAI completions client: token-id prompts,
echo, logprobs, max_tokens 1) scores a task through our server with the loglikelihoods our own model type
(`--model llamafoundry`) gives, example by example."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import serving
from tests.lm_eval_tasks import write_task_configs

from llamafoundry.checkpoint import load_model
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.server import Server

LIMIT = 12  # ARC-Easy questions: ~48 loglikelihood requests
TASK = "local_arc_easy"


def _loglikelihoods(lm_eval, model: str, model_args: str, tasks: Path) -> list[list[float]]:
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[TASK],
        limit=LIMIT,
        task_manager=TaskManager(include_path=str(tasks)),
        log_samples=True,
    )
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    return [[float(r[0]) for r in s["filtered_resps"]] for s in samples]


def test_local_completions_scores_as_our_model_type(tmp_path, shared_data, model_folders, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval

    import llamafoundry.eval.lm_eval_adapter  # noqa: F401  (registers --model llamafoundry in this process)

    write_task_configs(shared_data, tmp_path / "tasks")
    model, tokenizer, _ = load_model(model_folders["native"])
    server = Server(Generator(model, tokenizer), "tiny")
    with serving(server) as url:
        # lm-eval's tokenizer is the HF folder's; with BOS, as our model type encodes.
        args = (
            f"base_url={url}/v1/completions,model=tiny,tokenizer_backend=huggingface,"
            f"tokenizer={model_folders['hf']},tokenized_requests=True,add_bos_token=True,"
            f"max_length={model.cfg.max_seq_len},batch_size=8"
        )
        served = _loglikelihoods(lm_eval, "local-completions", args, tmp_path / "tasks")
        assert server.in_flight == 0
    ours = _loglikelihoods(
        lm_eval, "llamafoundry", f"pretrained={model_folders['native']}", tmp_path / "tasks"
    )
    assert len(served) == len(ours) == LIMIT
    assert [ll for doc in served for ll in doc] == pytest.approx([ll for doc in ours for ll in doc], abs=1e-4)
