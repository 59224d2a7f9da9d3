"""Mathematical reasoning (Sec. 3.5, Table 7): GSM8k and MATH.

Two numbers per task, as in the paper (which follows Minerva, Lewkowycz et al., 2022): greedy accuracy,
and maj1@k, the accuracy of the majority answer among k samples (k = 100 for GSM8k, 256 for MATH; samples
at temperature 0.6, Minerva's setting). Answers are extracted from the generated solution: GSM8k's
"#### N" line (else the last number), MATH's last \\boxed{...}.
"""

from __future__ import annotations

import abc
import re
from collections import Counter
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

SAMPLE_TEMPERATURE = 0.6
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def majority(answers: list[str | None]) -> str | None:
    """The most frequent extracted answer (unparsable samples do not vote); ties go to the one seen first."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None


class MathTask(Task):
    paper_metric = "acc"
    default_samples: int
    stop: tuple[str, ...]

    @abc.abstractmethod
    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """The few-shot prompt ending where the model's solution starts."""

    @abc.abstractmethod
    def extract(self, text: str) -> str | None:
        """The normalised final answer of a generated solution, None when it states none."""

    def same(self, answer: str | None, gold: str) -> bool:
        return answer is not None and answer == self.extract_gold(gold)

    def extract_gold(self, gold: str) -> str | None:
        return gold

    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        shots = self.shots(config)
        prompts = [
            self.prompt(d, sample_shots(pool, shots, config.seed, d["id"]) if shots else []) for d in docs
        ]
        tokens = config.max_new_tokens or 512
        greedy = lm.generate(
            [(p, SamplingParams(tokens, stop=self.stop)) for p in prompts], desc=f"{self.name} greedy"
        )
        k = self.default_samples if config.samples is None else config.samples
        sampled: list[list[str]] = [[] for _ in docs]
        if k:
            params = [
                SamplingParams(tokens, SAMPLE_TEMPERATURE, stop=self.stop, seed=config.seed + j)
                for j in range(k)
            ]
            outs = lm.generate([(p, q) for p in prompts for q in params], desc=f"{self.name} maj1@{k}")
            sampled = [outs[i * k : (i + 1) * k] for i in range(len(docs))]
        examples = []
        for doc, text, samples in zip(docs, greedy, sampled, strict=True):
            answer = self.extract(text)
            example = {
                "id": doc["id"],
                "gold": doc["answer"],
                "completion": text,
                "answer": answer,
                "acc": float(self.same(answer, doc["answer"])),
            }
            if k:
                votes = [self.extract(s) for s in samples]
                example |= {
                    "sample_answers": votes,
                    "majority": majority(votes),
                    f"maj1@{k}": float(self.same(majority(votes), doc["answer"])),
                }
            examples.append(example)
        metrics = {"acc": mean([e["acc"] for e in examples])}
        if k:
            metrics[f"maj1@{k}"] = mean([e[f"maj1@{k}"] for e in examples])
        return TaskResult(self.name, shots, metrics, self.paper_metric, examples)


# ---- GSM8k ------------------------------------------------------------------------------------------
def normalize_number(text: str) -> str | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else str(value)


class GSM8k(MathTask):
    """Cobbe et al. (2021), test split (1,319 problems), 8-shot chain-of-thought prompts."""

    name = "gsm8k"
    default_shots = 8
    default_samples = 100
    stop = ("\n\n", "Question:")

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("openai/gsm8k", "main", "test", self.doc)
        path = require(data_dir, "gsm8k/test.jsonl")
        return nonempty([self.doc(row, i) for i, row in enumerate(read_jsonl(path))], path)

    def fewshot_pool(self, data_dir: Path | None) -> list[Doc] | None:
        if data_dir is None:
            return from_hub("openai/gsm8k", "main", "train", lambda r, i: self.doc(r, i, "train"))
        train = data_dir / "gsm8k/train.jsonl"
        return (
            [self.doc(row, i, "train") for i, row in enumerate(read_jsonl(train))]
            if train.is_file()
            else None
        )

    @staticmethod
    def doc(row: dict, index: int, split: str = "test") -> Doc:
        solution, _, final = row["answer"].rpartition("####")
        # The calculator annotations <<48/2=24>> are training aids, not text a model should imitate.
        solution = re.sub(r"<<.*?>>", "", solution).strip()
        return {
            "id": f"gsm8k-{split}-{index}",
            "question": row["question"].strip(),
            "solution": solution,
            "answer": final.strip(),
        }

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        examples = "".join(
            f"Question: {s['question']}\nAnswer: {s['solution']}\n#### {s['answer']}\n\n" for s in shots
        )
        return examples + f"Question: {doc['question']}\nAnswer:"

    def extract(self, text: str) -> str | None:
        marked = re.search(r"####\s*(-?[$0-9.,]+)", text)
        if marked:
            return normalize_number(marked.group(1))
        numbers = re.findall(r"-?\$?\d[\d,]*(?:\.\d+)?", text)
        return normalize_number(numbers[-1]) if numbers else None

    def extract_gold(self, gold: str) -> str | None:
        return normalize_number(gold)


# ---- MATH -------------------------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        rest = text[start:].split(" ", 1)  # "\boxed 5"
        return rest[1].split("$")[0].strip() if len(rest) == 2 else None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i]
    return None


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{2} -> \\frac{1}{2}."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += f"{{{a}}}{b}{rest}" if b == "{" else f"{{{a}}}{{{b}}}{rest}"
    return out


def normalize_math(answer: str) -> str:
    """Hendrycks et al.'s equivalence normalisation (MATH's `strip_string`), so that e.g. "0.5", ".5",
    "\\frac12", "\\dfrac{1}{2}" compare as written forms of one answer where MATH's grader does."""
    s = answer.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\text\{\s*[a-zA-Z ]*\}$", "", s.strip())  # trailing units
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:  # "k = 5" -> "5"
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    match = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if match:
        s = f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    return s


class MATH(MathTask):
    """Hendrycks et al. (2021), test split (5,000 problems), 4-shot, answers in \\boxed{}."""

    name = "math"
    default_shots = 4
    default_samples = 256
    stop = ("\n\nProblem:", "Problem:")

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return [
                doc
                for subject in MATH_SUBJECTS
                for doc in from_hub(
                    "EleutherAI/hendrycks_math",
                    subject,
                    "test",
                    lambda r, i, s=subject: self.from_hub_row(r, f"{s}-{i}"),
                )
            ]
        path = require(data_dir, "math/math.jsonl.gz", "math/test.jsonl")
        return nonempty([self.doc(row, i) for i, row in enumerate(read_jsonl(path))], path)

    @staticmethod
    def doc(row: dict, index: int) -> Doc:
        """The gauntlet's export: context (problem), answer, chain_of_thought, category."""
        return {
            "id": f"math-{index}",
            "problem": row["context"].strip(),
            "solution": row["chain_of_thought"].strip(),
            "answer": row["answer"].strip(),
            "category": row.get("category", ""),
        }

    @staticmethod
    def from_hub_row(row: dict, key: str) -> Doc:
        return {
            "id": f"math-{key}",
            "problem": row["problem"].strip(),
            "solution": row["solution"].strip(),
            "answer": last_boxed(row["solution"]) or "",
            "category": row.get("type", ""),
        }

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        examples = "".join(f"Problem:\n{s['problem']}\n\nSolution: {s['solution']}\n\n" for s in shots)
        return examples + f"Problem:\n{doc['problem']}\n\nSolution:"

    def extract(self, text: str) -> str | None:
        boxed = last_boxed(text)
        if boxed is None:
            stated = re.search(r"final answer is\s*\$?(.+?)\$?\.?\s*(?:I hope|$)", text)
            boxed = stated.group(1) if stated else None
        return normalize_math(boxed) if boxed is not None else None

    def extract_gold(self, gold: str) -> str | None:
        return normalize_math(gold)


MATH_TASKS = [GSM8k(), MATH()]
