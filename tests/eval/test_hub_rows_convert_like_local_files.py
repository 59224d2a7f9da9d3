"""Without --data-dir, tasks read the Hugging Face hub; its rows (schemas of the dataset cards, built here
from the local files' examples, since tests have no network) must give the docs the local files give."""

from __future__ import annotations

import json
from pathlib import Path

from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.closed_book_qa import TriviaQA
from llamafoundry.eval.tasks.commonsense import ARC, PIQA, SIQA, BoolQ, OpenBookQA
from llamafoundry.eval.tasks.math import MATH
from llamafoundry.eval.tasks.mmlu import MMLU


def without_id(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "id"}


def test_arc_and_openbookqa_hub_rows(shared_data: Path):
    row = json.loads((shared_data / "arc_easy/ARC-Easy-Test.jsonl").open().readline())
    choices = row["question"]["choices"]
    hub = {
        "id": row["id"],
        "question": row["question"]["stem"],
        "answerKey": row["answerKey"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
    }
    assert ARC.from_hub_row(hub, 0) == ARC.doc(row)
    local = TASKS["openbookqa"].docs(shared_data)[0]
    hub = {
        "id": local["id"],
        "question_stem": local["query"],
        "answerKey": "ABCD"[local["gold"]],
        "choices": {"text": local["choices"], "label": list("ABCD")},
    }
    assert OpenBookQA.from_hub_row(hub, 0) == local


def test_piqa_siqa_boolq_hub_rows(shared_data: Path):
    piqa = TASKS["piqa"].docs(shared_data)[0]
    row = json.loads((shared_data / "piqa/dev.jsonl").open().readline())
    assert without_id(PIQA.doc(dict(row, label=piqa["gold"]), piqa["gold"], 0)) == without_id(piqa)
    siqa = TASKS["siqa"].docs(shared_data)[0]
    row = json.loads((shared_data / "siqa/dev.jsonl").open().readline())
    assert SIQA.doc(row, str(siqa["gold"] + 1), 0) == siqa  # the hub's label is "1".."3"
    boolq = TASKS["boolq"].docs(shared_data)[0]
    original = {
        "question": "does ethanol take more energy make that produces",
        "title": "Ethanol fuel",
        "answer": bool(boolq["gold"]),
        "passage": boolq["query"].split("\nQuestion: ")[0],
    }
    assert without_id(BoolQ.doc(original, 0)) == without_id(boolq)  # Google's dev.jsonl schema


def test_triviaqa_math_mmlu_hub_rows(shared_data: Path):
    local = TASKS["triviaqa"].docs(shared_data)[0]
    hub = {
        "question": local["question"],
        "question_id": "tc_1",
        "answer": {"value": local["answers"][0], "aliases": local["answers"]},
    }
    assert without_id(TriviaQA.from_hub_row(hub, 0)) == without_id(local)
    math_doc = TASKS["math"].docs(shared_data)[0]
    hub = {"problem": math_doc["problem"], "solution": math_doc["solution"], "type": "Counting & Probability"}
    converted = MATH.from_hub_row(hub, "counting_and_probability-0")
    assert converted["answer"] == math_doc["answer"] and converted["problem"] == math_doc["problem"]
    mmlu = MMLU().docs(shared_data)[0]
    choices = [line[3:] for line in mmlu["query"].split("\n")[1:5]]
    hub = {
        "question": mmlu["query"].split("\n")[0],
        "subject": "abstract_algebra",
        "choices": choices,
        "answer": mmlu["gold"],
    }
    assert MMLU().from_hub_row(hub, 0, "test") == mmlu
