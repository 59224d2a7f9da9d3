"""Closed-book question answering (Sec. 3.3, Tables 4 and 5): NaturalQuestions and TriviaQA.

The model answers from its weights alone: greedy decoding after the paper's prompt (its Appendix A)
"Answer these questions:\\nQ: ...\\nA: ...", with 0, 1, 5 or 64 example pairs; the answer ends at the
first line break. A prediction counts when its normalised form equals a normalised gold answer
(SQuAD's normalisation: lower case, no punctuation, no articles, single spaces).
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import (
    Doc,
    RunConfig,
    Task,
    TaskResult,
    from_hub,
    nonempty,
    read_jsonl,
    require,
    sample_shots,
)
from llamafoundry.eval.tasks.multiple_choice import mean
from llamafoundry.inference.sampling import SamplingParams

PROMPT = "Answer these questions:\n"


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation (Rajpurkar et al., 2016), used for NQ and TriviaQA exact match."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


class ClosedBookQA(Task):
    paper_metric = "em"
    hub: tuple[str, str | None, str]

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return (
            PROMPT
            + "".join(f"Q: {s['question']}\nA: {s['answers'][0]}\n" for s in shots)
            + f"Q: {doc['question']}\nA:"
        )

    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        shots = self.shots(config)
        params = SamplingParams(max_new_tokens=config.max_new_tokens or 32, stop=("\n",))
        prompts = [
            self.prompt(d, sample_shots(pool, shots, config.seed, d["id"]) if shots else []) for d in docs
        ]
        outputs = lm.generate([(p, params) for p in prompts], desc=f"{self.name} {shots}-shot")
        examples = [
            {
                "id": d["id"],
                "prompt": prompt,
                "generation": out,
                "prediction": out.strip(),
                "answers": d["answers"],
                "em": exact_match(out.strip(), d["answers"]),
            }
            for d, prompt, out in zip(docs, prompts, outputs, strict=True)
        ]
        return TaskResult(
            self.name, shots, {"em": mean([e["em"] for e in examples])}, self.paper_metric, examples
        )


class NaturalQuestions(ClosedBookQA):
    """NQ-open (Lee et al., 2019) dev split, 3,610 questions with their answer lists."""

    name = "nq_open"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("google-research-datasets/nq_open", None, "validation", self.doc)
        path = require(data_dir, "natural_questions/NQ-open.dev.jsonl")
        return nonempty([self.doc(row, i) for i, row in enumerate(read_jsonl(path))], path)

    @staticmethod
    def doc(row: dict, index: int) -> Doc:
        return {"id": f"nq-{index}", "question": row["question"].strip(), "answers": list(row["answer"])}


class TriviaQA(ClosedBookQA):
    """TriviaQA (Joshi et al., 2017), unfiltered dev questions with all answer aliases. Local copy: the
    MosaicML gauntlet's 3,000-question subsample ("Question: ...\\nAnswer:" contexts)."""

    name = "triviaqa"

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("mandarjoshi/trivia_qa", "unfiltered.nocontext", "validation", self.from_hub_row)
        path = require(data_dir, "triviaqa/triviaqa_sm_sub.jsonl", "triviaqa/triviaqa.jsonl")
        return nonempty([self.from_gauntlet(row, i) for i, row in enumerate(read_jsonl(path))], path)

    @staticmethod
    def from_gauntlet(row: dict, index: int) -> Doc:
        question = row["context"].strip().removeprefix("Question:").removesuffix("Answer:").strip()
        answers = [row["answer"], *[a for a in row.get("aliases", []) if a != row["answer"]]]
        return {"id": f"triviaqa-{index}", "question": question, "answers": answers}

    @staticmethod
    def from_hub_row(row: dict, index: int) -> Doc:
        answer = row["answer"]
        return {
            "id": row.get("question_id", f"triviaqa-{index}"),
            "question": row["question"].strip(),
            "answers": [answer["value"], *[a for a in answer["aliases"] if a != answer["value"]]],
        }


CLOSED_BOOK_QA = [NaturalQuestions(), TriviaQA()]
