"""HumanEval and MBPP: prompts, program assembly and pass@k, with scripted completions run in the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafoundry.errors import UserError
from llamafoundry.eval.sandbox import MINIMUM_LAYERS, Limits
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(shared_data: Path, scripted):
    task = TASKS["humaneval"]
    docs = task.docs(shared_data)[:3]
    canonical = {d["prompt"]: d["canonical_solution"] for d in docs}
    seen = []

    def reply(prompt, params):
        # At T=0.1 every sample is right; at T=0.8 only the first of the two (seed 1234) is.
        seen.append(params)
        if params.temperature == 0.1 or params.seed == 1234:
            return canonical[prompt] + "\ndef unrelated():\n    pass\n"  # cut at the "\ndef" stop sequence
        return "    return None\n"

    result = task.evaluate(scripted(reply=reply), docs, [], RunConfig(samples=2))
    assert result.metrics["pass@1"] == 1.0
    assert result.metrics["pass@1 (T=0.8)"] == pytest.approx(0.5)
    assert [e["T=0.8"]["statuses"] for e in result.examples] == [["passed", "failed"]] * 3
    assert {(p.temperature, p.stop) for p in seen} == {(0.1, task.stop), (0.8, task.stop)}


def test_mbpp_prompt_is_three_shot_from_the_prompt_split_and_code_is_tested(shared_data: Path, scripted):
    task = TASKS["mbpp"]
    docs, pool = task.docs(shared_data)[:2], task.fewshot_pool(shared_data)
    code = {d["text"]: d["code"] for d in docs}
    prompts = []

    def reply(prompt, params):
        prompts.append(prompt)
        task_text = prompt.rsplit("here is your task: ", 1)[1].split(" Your code should pass", 1)[0]
        return code[task_text] + "\n[DONE]\nextra text after the stop"

    result = task.evaluate(scripted(reply=reply), docs, pool, RunConfig(samples=1))
    assert result.metrics["pass@1"] == 1.0
    assert all(p.count("[BEGIN]") == 4 and p.count("[DONE]") == 3 for p in prompts)
    assert all(p.endswith("[BEGIN]\n") for p in prompts)
    pool_ids = {d["id"] for d in pool}
    assert pool_ids == {f"mbpp-{i}" for i in range(1, 11)}


def test_code_task_default_samples_are_the_papers_k():
    assert (TASKS["humaneval"].k_max, TASKS["mbpp"].k_max) == (100, 80)


class HumanEvalWithoutNamespaces(type(TASKS["humaneval"])):
    """HumanEval on a machine whose kernel refuses the sandbox's namespaces (e.g. a locked-down container)."""

    limits = Limits(timeout_s=10.0, kernel_layers=False)


def test_code_tasks_record_the_sandbox_and_refuse_to_run_without_it(shared_data: Path, scripted):
    docs = TASKS["humaneval"].docs(shared_data)[:1]
    solution = {d["prompt"]: d["canonical_solution"] for d in docs}
    lm = scripted(reply=lambda prompt, params: solution[prompt])

    result = TASKS["humaneval"].evaluate(lm, docs, [], RunConfig(samples=1))
    assert result.to_dict()["sandbox"]["minimum_met"] is True
    assert set(result.details["sandbox"]["layers"]) >= MINIMUM_LAYERS

    task = HumanEvalWithoutNamespaces()
    with pytest.raises(UserError, match="--unsafe-no-sandbox"):
        task.evaluate(lm, docs, [], RunConfig(samples=1))
    unsafe = task.evaluate(lm, docs, [], RunConfig(samples=1, unsafe_no_sandbox=True))
    assert unsafe.metrics["pass@1"] == 1.0
    assert (
        unsafe.details["sandbox"]["minimum_met"] is False
        and unsafe.details["sandbox"]["unsafe_no_sandbox"] is True
    )
