"""Common sense reasoning, zero-shot multiple choice (Sec. 3.1, Table 3).

Prompts follow lm-evaluation-harness (Gao et al., 2021), which the paper cites for its protocol, so its
numbers and ours can be compared example by example. Each task reads the official file layout (and the
formats real tools export, see shared/data/SOURCES.md), or the Hugging Face hub without --data-dir.
"""

from __future__ import annotations

import re
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import (
    DEV,
    TRAIN,
    Doc,
    Pool,
    RunConfig,
    TaskResult,
    from_hub,
    nonempty,
    read_csv,
    read_jsonl,
    read_lines,
    require,
)
from llamafoundry.eval.tasks.multiple_choice import MultipleChoiceTask, letter_index


def hellaswag_preprocess(text: str) -> str:
    """Remove WikiHow's [title]/[step] artifacts (the rule lm-evaluation-harness applies)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


class HellaSwag(MultipleChoiceTask):
    """Zellers et al. (2019), validation split, 10,042 contexts with four endings.

    Rows in the original schema (the hub's, rowanz's jsonl) are preferred: lm-evaluation-harness's
    `process_docs` builds the prompt from their fields (ctx_a + " " + ctx_b capitalised, then its
    `preprocess`). llama.cpp's text export has only the joined context, so ctx_b keeps its lower case there
    and most prompts differ from lm-eval's; it is read only when no original-schema file is present, and
    the result's `scored_form` says which form was scored.
    """

    name = "hellaswag"
    files = (
        "hellaswag/hellaswag_val.jsonl",
        "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl",
        "hellaswag/hellaswag_val_full.txt.gz",
        "hellaswag/hellaswag_val_full.txt",
    )

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("Rowan/hellaswag", None, "validation", self.from_row)
        path = require(data_dir, *self.files)
        if ".txt" in path.name:
            return nonempty(self.from_text_export(read_lines(path), path), path)
        return nonempty([self.from_row(row, i) for i, row in enumerate(read_jsonl(path))], path)

    def run(self, lm: LM, data_dir: Path | None, config: RunConfig) -> TaskResult:
        result = super().run(lm, data_dir, config)
        result.details["scored_form"] = self.scored_form(data_dir)
        return result

    def scored_form(self, data_dir: Path | None) -> str:
        """Which rows `docs` reads and how their prompts are built, in words for results.json/results.md."""
        if data_dir is None:
            return "Rowan/hellaswag (hub), original schema with lm-eval's preprocess"
        path = require(data_dir, *self.files)
        if ".txt" in path.name:
            return (
                f"{path.relative_to(data_dir)}: llama.cpp's text export, not lm-eval's preprocess "
                "(ctx_b is not capitalised); add an original-schema jsonl to match lm-eval"
            )
        return f"{path.relative_to(data_dir)}: original schema with lm-eval's preprocess"

    @staticmethod
    def from_row(row: dict, index: int) -> Doc:
        """The original rowanz jsonl schema (also the hub's)."""
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        return {
            "id": f"hellaswag-{row.get('ind', index)}",
            "query": hellaswag_preprocess(row["activity_label"] + ": " + ctx),
            "choices": [hellaswag_preprocess(e) for e in row["endings"]],
            "gold": int(row["label"]),
        }

    @staticmethod
    def from_text_export(lines: list[str], path: Path) -> list[Doc]:
        """llama.cpp's export: six lines per task (context, gold label, four endings)."""
        if len(lines) % 6:
            raise UserError(
                f"{path} has {len(lines)} lines, not a multiple of 6; it is not a HellaSwag text export"
            )
        return [
            {
                "id": f"hellaswag-{i // 6}",
                "query": hellaswag_preprocess(lines[i]),
                "choices": [hellaswag_preprocess(e) for e in lines[i + 2 : i + 6]],
                "gold": int(lines[i + 1]),
            }
            for i in range(0, len(lines), 6)
        ]


def _labelled(path: Path, labels_path: Path) -> list[tuple[dict, str]]:
    rows, labels = read_jsonl(path), read_lines(labels_path)
    if len(rows) != len(labels):
        raise UserError(
            f"{path} has {len(rows)} questions but {labels_path} {len(labels)} labels; "
            "use the matching labels file"
        )
    return list(zip(rows, labels, strict=True))


class PIQA(MultipleChoiceTask):
    """Bisk et al. (2020), validation split (1,838 goals, two solutions)."""

    name = "piqa"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("baber/piqa", None, "validation", lambda r, i: self.doc(r, r["label"], i))
        path = require(data_dir, "piqa/valid.jsonl", "piqa/dev.jsonl")
        labels = require(data_dir, "piqa/valid-labels.lst", "piqa/dev-labels.lst")
        return nonempty(
            [self.doc(row, label, i) for i, (row, label) in enumerate(_labelled(path, labels))], path
        )

    @staticmethod
    def doc(row: dict, label: str | int, index: int) -> Doc:
        return {
            "id": row.get("id") or f"piqa-{index}",
            "query": f"Question: {row['goal']}\nAnswer:",
            "choices": [row["sol1"], row["sol2"]],
            "gold": int(label),
        }


class SIQA(MultipleChoiceTask):
    """Sap et al. (2019), Social IQa validation split (1,954 questions, three answers)."""

    name = "siqa"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("lighteval/siqa", None, "validation", lambda r, i: self.doc(r, r["label"], i))
        path = require(data_dir, "siqa/dev.jsonl")
        labels = require(data_dir, "siqa/dev-labels.lst")
        return nonempty(
            [self.doc(row, label, i) for i, (row, label) in enumerate(_labelled(path, labels))], path
        )

    @staticmethod
    def doc(row: dict, label: str | int, index: int) -> Doc:
        return {
            "id": f"siqa-{index}",
            "query": f"Q: {row['context']} {row['question']}\nA:",
            "choices": [row["answerA"], row["answerB"], row["answerC"]],
            "gold": int(label) - 1,
        }


class BoolQ(MultipleChoiceTask):
    """Clark et al. (2019), validation split (3,270 questions); the paper normalises by P(answer | "Answer:")."""

    name = "boolq"
    paper_metric = "acc_answer"
    unconditional = True

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("aps/super_glue", "boolq", "validation", self.doc)
        path = require(data_dir, "boolq/val.jsonl.gz", "boolq/val.jsonl", "boolq/dev.jsonl")
        return nonempty([self.doc(row, i) for i, row in enumerate(read_jsonl(path))], path)

    @staticmethod
    def doc(row: dict, index: int) -> Doc:
        # SuperGLUE's copy has `label`; Google's original dev.jsonl has `answer`.
        label = row["label"] if "label" in row else row["answer"]
        return {
            "id": f"boolq-{row.get('idx', index)}",
            "query": f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:",
            "choices": ["no", "yes"],
            "gold": BoolQ.gold(label, index),
        }

    @staticmethod
    def gold(label: bool | int | str, index: int) -> int:
        """1 for yes: a JSON boolean, the hub's 0/1, or the strings "true"/"false" some SuperGLUE copies
        hold (where bool("false") would be True)."""
        if not isinstance(label, str):
            return int(bool(label))
        if label.strip().lower() not in ("true", "false"):
            raise UserError(f"BoolQ row {index + 1} has label {label!r}; expected true or false")
        return int(label.strip().lower() == "true")


class ARC(MultipleChoiceTask):
    """Clark et al. (2018), AI2 Reasoning Challenge test split; dev examples for few-shot prompts."""

    def __init__(self, level: str) -> None:
        self.level = level  # "Easy" or "Challenge"
        self.name = f"arc_{level.lower()}"

    def _file(self, split: str) -> str:
        return f"arc_{self.level.lower()}/ARC-{self.level}-{split}.jsonl"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("allenai/ai2_arc", f"ARC-{self.level}", "test", self.from_hub_row)
        path = require(data_dir, self._file("Test"))
        return nonempty([self.doc(row) for row in read_jsonl(path)], path)

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        if data_dir is None:
            return Pool(from_hub("allenai/ai2_arc", f"ARC-{self.level}", "train", self.from_hub_row), TRAIN)
        return Pool([self.doc(row) for row in read_jsonl(require(data_dir, self._file("Dev")))], DEV)

    @staticmethod
    def doc(row: dict) -> Doc:
        """The official AI2 jsonl: question {stem, choices [{text, label}]}, answerKey."""
        choices = row["question"]["choices"]
        return {
            "id": row["id"],
            "query": f"Question: {row['question']['stem']}\nAnswer:",
            "choices": [c["text"] for c in choices],
            "gold": letter_index(row["answerKey"], [c["label"] for c in choices]),
        }

    @staticmethod
    def from_hub_row(row: dict, index: int) -> Doc:
        return {
            "id": row["id"],
            "query": f"Question: {row['question']}\nAnswer:",
            "choices": row["choices"]["text"],
            "gold": letter_index(row["answerKey"], row["choices"]["label"]),
        }


class OpenBookQA(MultipleChoiceTask):
    """Mihaylov et al. (2018), main test split (500); the paper normalises by P(answer | "Answer:")."""

    name = "openbookqa"
    paper_metric = "acc_answer"
    unconditional = True

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("allenai/openbookqa", "main", "test", self.from_hub_row)
        return self._read(require(data_dir, "openbookqa/test.jsonl", "openbookqa/test.tsv"))

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        if data_dir is None:
            return Pool(from_hub("allenai/openbookqa", "main", "train", self.from_hub_row), TRAIN)
        return Pool(self._read(require(data_dir, "openbookqa/dev.jsonl", "openbookqa/dev.tsv")), DEV)

    def _read(self, path: Path) -> list[Doc]:
        if path.suffix == ".tsv":
            return nonempty([self.from_tsv(row, path) for row in read_csv(path, "\t")], path)
        return nonempty([ARC.doc(row) | {"query": row["question"]["stem"]} for row in read_jsonl(path)], path)

    @staticmethod
    def from_tsv(row: dict, path: Path) -> Doc:
        """The release's TSV: Choices is "(A) text (B) text (C) text (D) text"."""
        parts = re.split(r"\(([A-E])\) ", row["Choices"])[1:]
        labels, texts = parts[0::2], [t.strip() for t in parts[1::2]]
        if len(labels) < 2:
            raise UserError(f"{path}: question {row['ID']} has no '(A) ... (B) ...' choices")
        return {
            "id": row["ID"],
            "query": row["Question Stem"],
            "choices": texts,
            "gold": letter_index(row["Answer Key"], labels),
        }

    @staticmethod
    def from_hub_row(row: dict, index: int) -> Doc:
        return {
            "id": row["id"],
            "query": row["question_stem"],
            "choices": row["choices"]["text"],
            "gold": letter_index(row["answerKey"], row["choices"]["label"]),
        }


class WinoGrande(MultipleChoiceTask):
    """Sakaguchi et al. (2021), dev split (1,267), partial scoring: the option goes into the sentence and the
    rest of the sentence after the blank is scored."""

    name = "winogrande"
    paper_metric = "acc"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("allenai/winogrande", "winogrande_xl", "validation", self.from_official)
        path = require(data_dir, "winogrande/dev.jsonl", "winogrande/winogrande.jsonl")
        rows = read_jsonl(path)
        convert = self.from_partial if rows and "context_options" in rows[0] else self.from_official
        return nonempty([convert(row, i) for i, row in enumerate(rows)], path)

    @staticmethod
    def from_official(row: dict, index: int) -> Doc:
        """sentence with one "_", option1, option2, answer "1"/"2"."""
        blank = row["sentence"].index("_")
        before, after = row["sentence"][:blank], row["sentence"][blank + 1 :].strip()
        return {
            "id": row.get("qID") or f"winogrande-{index}",
            "contexts": [before + row["option1"], before + row["option2"]],
            "continuation": after,
            "gold": int(row["answer"]) - 1,
        }

    @staticmethod
    def from_partial(row: dict, index: int) -> Doc:
        """The partial-scoring export: context_options (sentence up to the blank, filled), continuation, gold."""
        return {
            "id": f"winogrande-{index}",
            "contexts": list(row["context_options"]),
            "continuation": row["continuation"].strip(),
            "gold": int(row["gold"]),
        }


COMMONSENSE = [
    BoolQ(),
    PIQA(),
    SIQA(),
    HellaSwag(),
    WinoGrande(),
    ARC("Easy"),
    ARC("Challenge"),
    OpenBookQA(),
]
