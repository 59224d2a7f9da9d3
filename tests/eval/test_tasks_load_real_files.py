"""Every task reads its split from the real files with the documented number of examples (SOURCES.md)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from llamafoundry.errors import UserError
from llamafoundry.eval.tasks import TASKS, resolve_tasks
from llamafoundry.eval.tasks.base import RunConfig, read_lines
from llamafoundry.eval.tasks.commonsense import HellaSwag, WinoGrande
from llamafoundry.eval.tasks.mmlu import DOMAINS, MMLU

# task -> (evaluation docs, few-shot pool or None when drawn from the evaluation split)
DOCUMENTED = {
    "boolq": (3270, None),
    "piqa": (1838, None),
    "siqa": (1954, None),
    "hellaswag": (1000, None),  # the original-schema subset is preferred to the 10,042-task text export
    "winogrande": (1267, None),
    "arc_easy": (2376, 570),
    "arc_challenge": (1172, 299),
    "openbookqa": (500, 500),
    "nq_open": (3610, None),
    "triviaqa": (3000, None),
    "race_middle": (500, None),
    "race_high": (500, None),
    "gsm8k": (1319, 8),  # Wei et al.'s exemplars: the files have no train split
    "math": (5000, 4),  # Minerva's prompt
    "humaneval": (164, None),
    "mbpp": (500, 10),
    "mmlu": (14042, 285),
    "realtoxicityprompts": (2396, None),
    "crows_pairs": (1508, None),
    "winogender": (720, None),
    "truthfulqa": (817, None),
    "truthfulqa_mc": (817, None),
}


def test_every_task_is_documented():
    assert set(DOCUMENTED) == set(TASKS)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_task_loads_its_split(name: str, shared_data: Path):
    task = TASKS[name]
    docs, pool = task.docs(shared_data), task.fewshot_pool(shared_data)
    expected_docs, expected_pool = DOCUMENTED[name]
    assert len(docs) == expected_docs
    assert (None if pool is None else len(pool)) == expected_pool
    assert len({d["id"] for d in docs}) == len(docs), "doc ids must be unique (few-shot draws exclude by id)"
    if "choices" in docs[0]:
        assert all(0 <= d["gold"] < len(d["choices"]) for d in docs)


def test_hellaswag_readers_agree_on_shared_examples(shared_data: Path):
    """The llama.cpp text export and the original jsonl hold the same tasks with the same labels
    (the export strips WikiHow's [title]/[step] markers a little differently, so match on letters)."""
    text_path = shared_data / "hellaswag/hellaswag_val_full.txt.gz"
    text = HellaSwag.from_text_export(read_lines(text_path), text_path)
    assert len(text) == 10042
    subset_path = shared_data / "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl"
    subset = [HellaSwag.from_row(json.loads(line), i) for i, line in enumerate(subset_path.open())]
    assert len(subset) == 1000

    def key(doc: dict) -> tuple[str, ...]:
        return tuple(re.sub(r"[^A-Za-z]", "", e)[:40] for e in doc["choices"])

    by_key = {key(d): d for d in text}
    assert all(key(d) in by_key for d in subset)
    assert all(by_key[key(d)]["gold"] == d["gold"] for d in subset)


def test_hellaswag_docs_are_lm_evals_process_docs(shared_data: Path):
    """With the shared files, HellaSwag reads the original-schema rows, and every context, ending and label
    is what lm-evaluation-harness's own `process_docs` (its `preprocess`) makes of them."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    path = shared_data / "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl"
    theirs = process_docs(datasets.Dataset.from_list([json.loads(line) for line in path.open()]))
    ours = TASKS["hellaswag"].docs(shared_data)
    assert [(d["query"], d["choices"], d["gold"]) for d in ours] == [
        (t["query"], t["choices"], t["gold"]) for t in theirs
    ]


def test_hellaswag_result_says_which_form_was_scored(tmp_path: Path, shared_data: Path, scripted):
    lm, config = scripted(score=lambda context, continuation: 0.0), RunConfig(limit=2)
    result = TASKS["hellaswag"].run(lm, shared_data, config).to_dict()
    assert result["scored_form"] == (
        "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl: original schema with lm-eval's preprocess"
    )
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag/hellaswag_val_full.txt.gz").symlink_to(
        shared_data / "hellaswag/hellaswag_val_full.txt.gz"
    )
    export = TASKS["hellaswag"].run(lm, tmp_path, config).to_dict()
    assert export["scored_form"].startswith(
        "hellaswag/hellaswag_val_full.txt.gz: llama.cpp's text export, not"
    )


def test_boolq_string_labels_are_read_as_written(shared_data: Path):
    """The shared SuperGLUE copy writes labels as the strings "true"/"false" (2,033 and 1,237)."""
    golds = [d["gold"] for d in TASKS["boolq"].docs(shared_data)]
    assert (golds.count(1), golds.count(0)) == (2033, 1237)
    assert TASKS["boolq"].doc({"question": "q", "passage": "p", "label": True}, 0)["gold"] == 1
    with pytest.raises(UserError, match="label 'maybe'"):
        TASKS["boolq"].doc({"question": "q", "passage": "p", "label": "maybe"}, 0)


def test_winogrande_official_schema_gives_the_partial_scoring_docs(tmp_path: Path, shared_data: Path):
    """The official dev.jsonl (sentence with "_", option1/2, answer) becomes what the export holds."""
    partial = WinoGrande().docs(shared_data)[0]
    (tmp_path / "winogrande").mkdir()
    row = {
        "qID": "q0",
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "2",
    }
    (tmp_path / "winogrande/dev.jsonl").write_text(json.dumps(row) + "\n")
    official = WinoGrande().docs(tmp_path)[0]
    assert official["contexts"] == partial["contexts"]
    assert official["continuation"] == partial["continuation"]
    assert official["gold"] == partial["gold"] == 1


def test_mmlu_reads_hendrycks_headerless_layout(tmp_path: Path, shared_data: Path):
    """Hendrycks' own files have no header and letter answers; both layouts give the same docs."""
    for split in ("test", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        for source in (shared_data / "mmlu" / split).glob("*.csv"):
            with source.open(newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))[1:]
            with (tmp_path / "mmlu" / split / source.name).open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(row[:5] + ["ABCD"[int(row[5])]] for row in rows)
    with_header = MMLU().docs(shared_data)
    headerless = MMLU().docs(tmp_path)
    assert [(d["query"], d["gold"]) for d in headerless] == [(d["query"], d["gold"]) for d in with_header]


def test_mmlu_domains_match_lm_evaluation_harness():
    """Our subject -> domain table is Hendrycks' categories, as lm-eval's mmlu configs tag them."""
    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks/mmlu/default"
    tags = {
        "mmlu_stem_tasks": "STEM",
        "mmlu_humanities_tasks": "Humanities",
        "mmlu_social_sciences_tasks": "Social Sciences",
        "mmlu_other_tasks": "Other",
    }
    theirs: dict[str, set[str]] = {d: set() for d in DOMAINS}
    for path in root.glob("mmlu_*.yaml"):
        text = path.read_text()
        for tag, domain in tags.items():
            if tag in text:
                theirs[domain].add(path.stem.removeprefix("mmlu_"))
    assert {d: set(s) for d, s in DOMAINS.items()} == theirs


def test_missing_file_is_a_one_line_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="piqa/valid.jsonl not found"):
        TASKS["piqa"].docs(tmp_path)


def test_tasks_syntax_of_lm_evaluation_harness():
    assert [t.name for t in resolve_tasks("arc_*,social_iqa")] == ["arc_easy", "arc_challenge", "siqa"]
    assert [t.name for t in resolve_tasks("race,hellaswag,race_high")] == [
        "race_middle",
        "race_high",
        "hellaswag",
    ]
    assert len(resolve_tasks("commonsense")) == 8
    with pytest.raises(UserError, match="unknown task 'hellaswagg'"):
        resolve_tasks("hellaswagg")
