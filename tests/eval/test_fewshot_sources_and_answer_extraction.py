"""Few-shot examples come from a named source (a train/dev split, the paper's exemplars, or, said aloud, the
evaluated split minus the example), and GSM8k's answers are extracted as the reference does."""

from __future__ import annotations

import ast
from pathlib import Path

import lm_eval
import pytest
import yaml

from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import DEV, EVALUATED_SPLIT, PAPER_EXEMPLARS, RunConfig
from llamafoundry.eval.tasks.math import GSM8k

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


def lm_eval_gsm8k_cot_prompt(question: str) -> str:
    """lm-evaluation-harness's gsm8k-cot prompt: its eight samples, target delimiter " ", shots "\\n\\n"."""
    config = yaml.safe_load((LM_EVAL_TASKS / "gsm8k/gsm8k-cot.yaml").read_text())
    shots = "".join(f"Q: {s['question']}\nA: {s['target']}\n\n" for s in config["fewshot_config"]["samples"])
    return shots + f"Q: {question}\nA:"


def lm_eval_minerva_prompt(problem: str) -> str:
    """lm-evaluation-harness's minerva_math prompt, its samples read from utils.py's source (importing the
    module needs sympy and math_verify)."""
    tree = ast.parse((LM_EVAL_TASKS / "minerva_math/utils.py").read_text())
    function = next(n for n in tree.body if getattr(n, "name", "") == "list_fewshot_samples")
    samples = ast.literal_eval(function.body[0].value)
    shots = "".join(f"Problem:\n{s['problem']}\n\nSolution: {s['solution']}\n\n" for s in samples)
    return shots + f"Problem:\n{problem}\n\nSolution:"


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_math_tasks_without_a_train_split_use_the_papers_exemplars(name, shared_data: Path, scripted):
    task = TASKS[name]
    lm = scripted(reply=lambda context, params: "The answer is 3.")
    result = task.run(lm, shared_data, RunConfig(limit=2, samples=0))
    assert result.fewshot_source == PAPER_EXEMPLARS
    docs = task.docs(shared_data)[:2]
    expected = (
        [lm_eval_gsm8k_cot_prompt(d["question"]) for d in docs]
        if name == "gsm8k"
        else [lm_eval_minerva_prompt(d["problem"]) for d in docs]
    )
    assert [context for context, _ in lm.gen_requests] == expected
    assert result.to_dict()["fewshot_source"] == PAPER_EXEMPLARS


def test_fewer_shots_take_the_first_exemplars_in_order(shared_data: Path, scripted):
    lm = scripted(reply=lambda context, params: "")
    TASKS["gsm8k"].run(lm, shared_data, RunConfig(limit=1, shots=2, samples=0))
    prompt = lm.gen_requests[0][0]
    assert prompt.startswith("Q: There are 15 trees in the grove.")
    assert prompt.count("Q: ") == 3 and "Q: If there are 3 cars" in prompt


@pytest.mark.parametrize(
    "name, source", [("arc_easy", DEV), ("openbookqa", DEV), ("mmlu", DEV), ("mbpp", "prompt split")]
)
def test_tasks_with_a_few_shot_split_name_it(name: str, source: str, shared_data: Path):
    assert TASKS[name].fewshot_pool(shared_data).source == source


def test_drawing_from_the_evaluated_split_is_said_and_recorded(shared_data: Path, scripted, capsys):
    task = TASKS["nq_open"]
    lm = scripted(reply=lambda context, params: " x")
    result = task.run(lm, shared_data, RunConfig(limit=3, shots=5))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nq_open: " in err and EVALUATED_SPLIT in err
    assert result.fewshot_source == EVALUATED_SPLIT
    for doc, (prompt, _) in zip(task.docs(shared_data)[:3], lm.gen_requests, strict=True):
        assert prompt.count(doc["question"]) == 1  # the example itself is never one of its shots


def test_zero_shot_runs_have_no_source_and_print_nothing(shared_data: Path, scripted, capsys):
    result = TASKS["piqa"].run(scripted(score=lambda c, x: -len(x)), shared_data, RunConfig(limit=2))
    assert result.fewshot_source is None and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "text, answer",
    [
        ("She buys 3-4 apples a day, so 2 * 9 = 18 apples.", "18"),
        ("I like 3-4 apples", "4"),  # a hyphen, not a minus sign
        ("He has 7 apples left.\n#### .", "7"),  # no number after ####: the last number
        ("The answer is .\nSo 12 in all", "12"),
        ("So 5 + 4 = 9. The answer is 9.", "9"),  # Wei et al.'s strict match
        ("They lose 3 - 5 = -2 dollars. The answer is -2.", "-2"),
        ("The answer is $1,200.", "1200"),
        ("#### 18\nQ: next, 41", "18"),  # the GSM8k solution format
        ("The answer is 8. Then 2 + 3 = 5. The answer is 5.", "8"),  # the first stated answer
        ("It is 0.50 dollars", "0.5"),
        ("x = -4", "-4"),
        ("no numbers at all", None),
    ],
)
def test_gsm8k_answer_extraction(text: str, answer: str | None):
    assert GSM8k().extract(text) == answer
