"""Mathematical reasoning (Sec. 3.5, Table 7): GSM8k and MATH.

Two numbers per task, as in the paper (which follows Minerva, Lewkowycz et al., 2022): greedy accuracy,
and maj1@k, the accuracy of the majority answer among k samples (k = 100 for GSM8k, 256 for MATH; samples
at temperature 0.6, Minerva's setting). Few-shot examples come from the train split where the files have
one, else from the protocol's fixed exemplars: Wei et al.'s (2022) eight chain-of-thought problems for
GSM8k, Minerva's four-problem prompt for MATH (both as lm-evaluation-harness's gsm8k-cot and minerva_math
tasks hold them). Answers are extracted from the generated solution: GSM8k's "The answer is N" or
"#### N" (else the last number), MATH's last \\boxed{...}.
"""

from __future__ import annotations

import abc
import re
from collections import Counter
from pathlib import Path

from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import (
    PAPER_EXEMPLARS,
    Doc,
    Pool,
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
        # Each example keeps its prompt and greedy completion; of the k samples only their extracted
        # answers (the votes), as k full solutions per problem would make the file gigabytes (MATH: 256).
        for doc, prompt, text, samples in zip(docs, prompts, greedy, sampled, strict=True):
            answer = self.extract(text)
            example = {
                "id": doc["id"],
                "gold": doc["answer"],
                "prompt": prompt,
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
# Wei et al. (2022), Table 20: the eight chain-of-thought exemplars Minerva and the LLaMA paper prompted
# GSM8k with, as (question, rationale, answer); the rationale is followed by "The answer is N.".
GSM8K_EXEMPLARS = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they "
        "are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. So there "
        "must have been 21 - 15 = 6.",
        "6",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
        "5",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left "
        "in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After "
        "eating 35, they had 74 - 35 = 39.",
        "39",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many "
        "lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
        "20 - 12 = 8.",
        "8",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does "
        "he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. "
        "5 + 4 = 9.",
        "9",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, from "
        "monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
        "computers were added. 9 + 20 is 29.",
        "29",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How "
        "many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing "
        "2 more, he had 35 - 2 = 33 golf balls.",
        "33",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has "
        "23 - 15 dollars left. 23 - 15 is 8.",
        "8",
    ),
)
# lm-evaluation-harness's strict match (gsm8k-cot's "The answer is N", gsm8k's "#### N"), the first one
# that holds a digit: "#### ." states no answer and falls back to the last number.
STATED_ANSWER = re.compile(r"(?:The answer is|####)\s*\$?(-?[0-9.,]*[0-9][0-9.,]*)")
# Its flexible match, the last number; a minus sign right after a word or digit is a hyphen ("3-4 apples":
# 4), not the sign of the number.
NUMBER = re.compile(r"(?:(?<!\w)-)?\$?[0-9][0-9,]*(?:\.[0-9]+)?")


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
    stop = ("\n\n", "Q:")

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("openai/gsm8k", "main", "test", self.doc)
        path = require(data_dir, "gsm8k/test.jsonl")
        return nonempty([self.doc(row, i) for i, row in enumerate(read_jsonl(path))], path)

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        # The paper's protocol (Minerva's, which LLaMA follows) prompts with Wei et al.'s fixed eight, as
        # lm-eval's gsm8k-cot does; draws from the train split would be another protocol.
        return Pool(
            [
                {"id": f"gsm8k-exemplar-{i}", "question": q, "solution": r, "answer": a}
                for i, (q, r, a) in enumerate(GSM8K_EXEMPLARS)
            ],
            PAPER_EXEMPLARS,
        )

    @staticmethod
    def doc(row: dict, index: int) -> Doc:
        solution, _, final = row["answer"].rpartition("####")
        # The calculator annotations <<48/2=24>> are training aids, not text a model should imitate.
        solution = re.sub(r"<<.*?>>", "", solution).strip()
        return {
            "id": f"gsm8k-test-{index}",
            "question": row["question"].strip(),
            "solution": solution,
            "answer": final.strip(),
        }

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """Wei et al.'s chain-of-thought format, as lm-evaluation-harness's gsm8k-cot writes it."""
        examples = "".join(
            f"Q: {s['question']}\nA: {s['solution']} The answer is {s['answer']}.\n\n" for s in shots
        )
        return examples + f"Q: {doc['question']}\nA:"

    def extract(self, text: str) -> str | None:
        stated = STATED_ANSWER.search(text)
        answer = normalize_number(stated.group(1)) if stated else None
        if answer is None:
            numbers = NUMBER.findall(text)
            answer = normalize_number(numbers[-1]) if numbers else None
        return answer

    def extract_gold(self, gold: str) -> str | None:
        return normalize_number(gold)


# ---- MATH -------------------------------------------------------------------------------------------
# Minerva's four-shot prompt (Lewkowycz et al., 2022, Appendix D.2) as (problem, solution), the solutions
# ending in the "Final Answer: ..." line the model learns to write.
MINERVA_EXEMPLARS = (
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, "
        "and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which "
        "gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\n"
        "Final Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
        "\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how "
        "many times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds "
        "of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        "$2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
        "\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\n"
        "Final Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a "
        "solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we "
        "also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\n"
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
)


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

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        # Minerva's 4-shot prompt, the paper's protocol for MATH, from the hub or local files alike.
        return Pool(
            [
                {"id": f"math-exemplar-{i}", "problem": p, "solution": s, "answer": last_boxed(s) or ""}
                for i, (p, s) in enumerate(MINERVA_EXEMPLARS)
            ],
            PAPER_EXEMPLARS,
        )

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
