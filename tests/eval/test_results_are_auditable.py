"""results.json lets anyone check a number without rerunning: each example's exact prompt (once) and the
continuations scored or the text generated, and each task's few-shot source (also in results.md)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from llamafoundry.cli import main
from llamafoundry.eval import report
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig


@pytest.mark.parametrize(
    "name, shots", [("arc_easy", 2), ("winogrande", 0), ("boolq", 0), ("hellaswag", 1), ("mmlu", 5)]
)
def test_each_example_keeps_the_pairs_it_scored_with_each_prompt_once(
    name: str, shots: int, shared_data: Path, scripted, tmp_path: Path
):
    lm = scripted(score=lambda context, continuation: -float(len(context) % 7 + len(continuation)))
    result = TASKS[name].run(lm, shared_data, RunConfig(limit=3, shots=shots))
    recorded = []
    for example in result.examples:
        prompts = example.get("prompts", [example.get("prompt")])
        assert None not in prompts and example["continuations"]
        recorded += list(itertools.product(prompts, example["continuations"]))
    assert sorted(recorded) == sorted(lm.ll_requests)  # exactly what the model scored, nothing else
    report.write_json(tmp_path / "results.json", [result], {})
    text = (tmp_path / "results.json").read_text()
    held = [p for e in result.examples for p in e.get("prompts", [e.get("prompt")]) if p != "Answer:"]
    for prompt in held:
        # Once per example holding it (WinoGrande's twins share a sentence), not once per continuation.
        assert text.count(json.dumps(prompt)) == held.count(prompt)


@pytest.mark.parametrize("name, shots", [("nq_open", 1), ("gsm8k", 2), ("mbpp", 3)])
def test_generation_examples_keep_their_prompt_and_generation(
    name: str, shots: int, shared_data: Path, scripted
):
    lm = scripted(reply=lambda context, params: f" {len(context)} and more")
    config = RunConfig(limit=2, shots=shots, samples=1, unsafe_no_sandbox=True)
    result = TASKS[name].run(lm, shared_data, config)
    prompts = list(dict.fromkeys(context for context, _ in lm.gen_requests))
    assert [e["prompt"] for e in result.examples] == prompts
    for example, prompt in zip(result.examples, prompts, strict=True):
        generated = (
            example.get("generation") or example.get("completion") or example["T=0.1"]["completions"][0]
        )
        assert generated == f" {len(prompt)} and more"


def test_results_json_and_markdown_name_each_tasks_few_shot_source(
    model_folders, shared_data: Path, tmp_path: Path, capsys
):
    out = tmp_path / "results"
    args = ["eval", str(model_folders["native"]), "--tasks", "arc_easy,nq_open,gsm8k", "--shots", "1"]
    args += ["--data-dir", str(shared_data), "--limit", "2", "--max-new-tokens", "2", "--samples", "0"]
    assert main([*args, "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["fewshot_source"] for r in results] == [
        "dev",
        "evaluated split minus the example",
        "paper exemplars",
    ]
    assert all(e["prompt"] for r in results for e in r["examples"])
    table = (out / "results.md").read_text()
    assert "- arc_easy (1-shot): dev\n" in table
    assert "- nq_open (1-shot): evaluated split minus the example\n" in table
    assert "- gsm8k (1-shot): paper exemplars\n" in table
    assert "nq_open: no train/dev split" in capsys.readouterr().err
