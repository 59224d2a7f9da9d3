"""Reading comprehension: RACE middle and high school (Lai et al., 2017), zero-shot (Sec. 3.4, Table 6)."""

from __future__ import annotations

from pathlib import Path

from llamafoundry.eval.tasks.base import Doc, from_hub, nonempty, read_jsonl, require
from llamafoundry.eval.tasks.multiple_choice import MultipleChoiceTask, letter_index

LETTERS = "ABCD"


class RACE(MultipleChoiceTask):
    """One of RACE's two levels; each question of an article is one doc, its four options the choices."""

    def __init__(self, level: str) -> None:
        self.level = level  # "middle" or "high"
        self.name = f"race_{level}"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("ehovy/race", self.level, "test", self.doc)
        # A jsonl of questions (example_id says the level, as in RACE's middle/high folders).
        path = require(data_dir, "race/race.jsonl", f"race/test_{self.level}.jsonl")
        rows = [row for row in read_jsonl(path) if row.get("example_id", self.level).startswith(self.level)]
        return nonempty([self.doc(row, i) for i, row in enumerate(rows)], f"{path} ({self.level})")

    def doc(self, row: dict, index: int) -> Doc:
        return {
            "id": f"{row.get('example_id', self.name)}-{row.get('question_id', index)}",
            "query": f"Article: {row['article'].strip()}\nQuestion: {row['question'].strip()}\nAnswer:",
            "choices": [o.strip() for o in row["options"]],
            "gold": letter_index(row["answer"], LETTERS),
        }


READING = [RACE("middle"), RACE("high")]
