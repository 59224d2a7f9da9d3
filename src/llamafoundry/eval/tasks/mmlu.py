"""Massive Multitask Language Understanding (Hendrycks et al., 2021), 5-shot (Sec. 3.6, Tables 9 and 16).

57 subjects; each question's few-shot examples are the first ones of the same subject's dev split, in
the file's order (five per subject), as Hendrycks' evaluate.py takes `dev_df[:k]`. The prompt is that
script's, character for character: `gen_prompt`'s header (its `format_subject` puts a space before every
word, so "about  abstract algebra" has two), then `format_example` blocks "question / A. .. D. / Answer: X"
(the question as the file has it, not stripped), and the letter is scored as " A" .. " D".
Accuracy is reported overall and per domain (humanities, STEM, social sciences, other), averaged over
questions as Hendrycks' evaluate.py does.
"""

from __future__ import annotations

import csv
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import (
    DEV,
    Doc,
    Pool,
    RunConfig,
    TaskResult,
    from_hub,
    limit_docs,
    read_csv,
    require,
)
from llamafoundry.eval.tasks.multiple_choice import MultipleChoiceTask, mean

LETTERS = ["A", "B", "C", "D"]
DOMAINS: dict[str, tuple[str, ...]] = {  # Hendrycks' categories.py
    "STEM": (
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "Humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "Social Sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "Other": (
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}
SUBJECTS = sorted(s for subjects in DOMAINS.values() for s in subjects)
DOMAIN_OF = {s: domain for domain, subjects in DOMAINS.items() for s in subjects}


def format_subject(subject: str) -> str:
    """Hendrycks' `format_subject`: every word of the file name after a space ("abstract_algebra" ->
    " abstract algebra"), which the header's "about {}" follows with its own space."""
    return "".join(" " + word for word in subject.split("_"))


class MMLU(MultipleChoiceTask):
    """Hendrycks et al. (2021), test split (14,042 questions in 57 subjects), 5-shot from each subject's dev."""

    name = "mmlu"
    paper_metric = "acc"
    default_shots = 5

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("cais/mmlu", "all", "test", lambda row, i: self.from_hub_row(row, i, "test"))
        return [
            doc
            for s in SUBJECTS
            for doc in self._read(require(data_dir, f"mmlu/test/{s}_test.csv"), s, "test")
        ]

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        if data_dir is None:
            return Pool(
                from_hub("cais/mmlu", "all", "dev", lambda row, i: self.from_hub_row(row, i, "dev")), DEV
            )
        return Pool(
            [
                doc
                for s in SUBJECTS
                for doc in self._read(require(data_dir, f"mmlu/dev/{s}_dev.csv"), s, "dev")
            ],
            DEV,
        )

    def _read(self, path: Path, subject: str, split: str) -> list[Doc]:
        """Both layouts: with a header (question, choice0-3, answer 0-3) or Hendrycks' headerless one
        (question, A, B, C, D, letter)."""
        with path.open(encoding="utf-8", newline="") as f:
            first = next(csv.reader(f), [])
        header = [c.strip().lower() for c in first[:1] + first[-1:]] == ["question", "answer"]
        names = None if header else ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
        docs = []
        for i, row in enumerate(read_csv(path, fieldnames=names)):
            answer = row["answer"].strip()
            gold = LETTERS.index(answer) if answer in LETTERS else int(answer)
            if gold not in range(4):
                raise UserError(f"{path}: row {i + 1} has answer {answer!r}; expected 0-3 or A-D")
            docs.append(
                self.doc(
                    f"{subject}-{split}-{i}",
                    subject,
                    row["question"],
                    [row[f"choice{k}"] for k in range(4)],
                    gold,
                )
            )
        return docs

    @staticmethod
    def doc(doc_id: str, subject: str, question: str, choices: list[str], gold: int) -> Doc:
        block = (
            question
            + "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, choices, strict=True))
            + "\nAnswer:"
        )
        return {"id": doc_id, "subject": subject, "query": block, "choices": LETTERS, "gold": gold}

    def from_hub_row(self, row: dict, index: int, split: str) -> Doc:
        return self.doc(
            f"{row['subject']}-{split}-{index}",
            row["subject"],
            row["question"],
            row["choices"],
            int(row["answer"]),
        )

    def limit(self, docs: list[Doc], limit: int | float | None) -> list[Doc]:
        """As lm-evaluation-harness: --limit applies to each subject, so every domain is represented."""
        return [
            d
            for s in dict.fromkeys(d["subject"] for d in docs)
            for d in limit_docs([d for d in docs if d["subject"] == s], limit)
        ]

    def header(self, doc: Doc) -> str:
        return f"The following are multiple choice questions (with answers) about {format_subject(doc['subject'])}.\n\n"

    def prefix(self, doc: Doc, pool: list[Doc], config: RunConfig) -> str:
        """The header and the subject's first `shots` dev examples in dev order (the same for every question)."""
        same_subject = [d for d in pool if d["subject"] == doc["subject"] and d["id"] != doc["id"]]
        if self.shots(config) > len(same_subject):
            raise UserError(
                f"{self.shots(config)} shots asked but {doc['subject']} has only {len(same_subject)} "
                "dev examples; use fewer --shots"
            )
        shots = same_subject[: self.shots(config)]
        return self.header(doc) + "".join(self.shot_text(s) + "\n\n" for s in shots)

    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        result = super().evaluate(lm, docs, pool, config)
        for doc, example in zip(docs, result.examples, strict=True):
            example["subject"] = doc["subject"]
        by_domain: dict[str, list[float]] = {}
        for example in result.examples:
            by_domain.setdefault(DOMAIN_OF[example["subject"]], []).append(example["acc"])
        result.groups = {
            domain: {"acc": mean(scores), "n": len(scores)} for domain, scores in by_domain.items()
        }
        return result


MMLU_TASKS = [MMLU()]
