"""Multiple choice by likelihood (Sec. 3), shared by the commonsense tasks, RACE and MMLU.

A doc is {"id", "query", "choices", "gold"}; each choice is scored as the continuation " " + choice of
the (few-shot prefixed) query. Three rules pick an answer from the same forward passes:
- acc:        the highest log-likelihood;
- acc_norm:   log-likelihood divided by the number of characters of the choice (Gao et al., 2021);
- acc_answer: log P(choice | query) - log P(choice | "Answer:") (Brown et al., 2020), which the paper used
              for OpenBookQA and BoolQ.
WinoGrande docs are {"id", "contexts", "continuation", "gold"}: partial scoring (Trinh & Le, 2018) puts
each option into the sentence and scores the shared rest of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from llamafoundry.eval.lm import LM
from llamafoundry.eval.tasks.base import Doc, RunConfig, Task, TaskResult, sample_shots

ANSWER_CONTEXT = "Answer:"


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (as numpy.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_choices(
    lls: Sequence[float], choices: Sequence[str], gold: int, unconditional: Sequence[float] | None = None
) -> dict:
    """Predictions and 0/1 scores of each normalisation for one doc."""
    preds = {
        "acc": argmax(lls),
        "acc_norm": argmax([ll / max(len(c), 1) for ll, c in zip(lls, choices, strict=True)]),
    }
    if unconditional is not None:
        preds["acc_answer"] = argmax([ll - u for ll, u in zip(lls, unconditional, strict=True)])
    out: dict = {f"pred_{k}": v for k, v in preds.items()}
    out.update({k: float(v == gold) for k, v in preds.items()})
    return out


class MultipleChoiceTask(Task):
    paper_metric = "acc_norm"
    unconditional = False  # also score each choice after "Answer:" alone (OBQA, BoolQ)
    delimiter = " "

    def header(self, doc: Doc) -> str:
        """Text before the few-shot examples (MMLU names the subject)."""
        return ""

    def shot_text(self, doc: Doc) -> str:
        if "contexts" in doc:
            return doc["contexts"][doc["gold"]] + self.delimiter + doc["continuation"]
        return doc["query"] + self.delimiter + doc["choices"][doc["gold"]]

    def prefix(self, doc: Doc, pool: list[Doc], config: RunConfig) -> str:
        shots = sample_shots(pool, self.shots(config), config.seed, doc["id"]) if self.shots(config) else []
        return self.header(doc) + "".join(self.shot_text(s) + "\n\n" for s in shots)

    def requests(self, doc: Doc, prefix: str) -> list[tuple[str, str]]:
        if "contexts" in doc:
            return [(prefix + c, self.delimiter + doc["continuation"]) for c in doc["contexts"]]
        reqs = [(prefix + doc["query"], self.delimiter + c) for c in doc["choices"]]
        if self.unconditional:
            reqs += [(ANSWER_CONTEXT, self.delimiter + c) for c in doc["choices"]]
        return reqs

    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        spans, requests = [], []
        for doc in docs:
            reqs = self.requests(doc, self.prefix(doc, pool, config))
            spans.append((len(requests), len(reqs)))
            requests += reqs
        results = lm.loglikelihood(requests, desc=self.name)
        examples = []
        for doc, (start, count) in zip(docs, spans, strict=True):
            lls = [ll for ll, _ in results[start : start + count]]
            example = self.score(doc, lls, [g for _, g in results[start : start + count]])
            examples.append(example | scored_text(requests[start : start + count]))
        metrics = (
            {k: mean([e[k] for e in examples]) for k in examples[0] if k.startswith("acc")}
            if examples
            else {}
        )
        return TaskResult(self.name, self.shots(config), metrics, self.paper_metric, examples)

    def score(self, doc: Doc, lls: list[float], greedy: list[bool]) -> dict:
        n = len(doc["contexts"]) if "contexts" in doc else len(doc["choices"])
        choices = [doc["continuation"]] * n if "contexts" in doc else doc["choices"]
        unconditional = lls[n:] if self.unconditional else None
        scored = score_choices(lls[:n], choices, doc["gold"], unconditional)
        return {
            "id": doc["id"],
            "gold": doc["gold"],
            "loglikelihoods": lls[:n],
            "greedy": greedy[:n],
            **({"unconditional": unconditional} if unconditional is not None else {}),
            **scored,
        }


def scored_text(requests: Sequence[tuple[str, str]]) -> dict:
    """What an example scored, for results.json, each text once: every prompt paired with every
    continuation (one prompt and its choices; WinoGrande's filled-in sentences and their shared rest; the
    prompt and "Answer:" for tasks normalised by the unconditional likelihood)."""
    prompts = list(dict.fromkeys(c for c, _ in requests))
    continuations = list(dict.fromkeys(x for _, x in requests))
    shown = {"prompt": prompts[0]} if len(prompts) == 1 else {"prompts": prompts}
    return shown | {"continuations": continuations}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def letter_index(key: str, labels: Sequence[str]) -> int:
    """Index of an answer key ('A'-'E' or '1'-'5') among the labels a question offers."""
    return list(labels).index(key.strip())
