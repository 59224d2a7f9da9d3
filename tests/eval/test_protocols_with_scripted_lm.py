"""The paper's protocols (Sec. 3) checked with a scripted LM whose likelihoods and generations the test sets."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig, sample_shots
from llamafoundry.eval.tasks.closed_book_qa import exact_match
from llamafoundry.eval.tasks.code import pass_at_k
from llamafoundry.eval.tasks.math import GSM8k, majority, normalize_math
from llamafoundry.eval.tasks.multiple_choice import ANSWER_CONTEXT, MultipleChoiceTask
from llamafoundry.inference.sampling import SamplingParams


class ThreeChoices(MultipleChoiceTask):
    """A task of one question whose three normalisations each pick a different answer."""

    name = "three_choices"
    unconditional = True

    def docs(self, data_dir):
        return [
            {"id": "q", "query": "Question: which?\nAnswer:", "choices": ["a", "bbbbbbbbbb", "cc"], "gold": 2}
        ]


def three_choice_scores(context: str, continuation: str) -> float:
    conditional = {" a": -2.0, " bbbbbbbbbb": -5.0, " cc": -3.0}
    # P(choice | "Answer:"): "cc" is an unlikely answer a priori, so it gains most from the context.
    unconditional = {" a": -1.9, " bbbbbbbbbb": -4.0, " cc": -9.0}
    return (unconditional if context == ANSWER_CONTEXT else conditional)[continuation]


def test_each_normalisation_picks_what_its_rule_picks(scripted):
    # acc: "a" has the highest log-likelihood (-2). acc_norm (per character): "bbbbbbbbbb" (-0.5 per char).
    # acc_answer: log P(c|ctx) - log P(c|"Answer:") is -0.1, -1.0, +6.0: "cc", the gold answer.
    lm = scripted(score=three_choice_scores)
    result = ThreeChoices().evaluate(lm, ThreeChoices().docs(None), [], RunConfig())
    example = result.examples[0]
    assert (example["pred_acc"], example["pred_acc_norm"], example["pred_acc_answer"]) == (0, 1, 2)
    assert result.metrics == {"acc": 0.0, "acc_norm": 0.0, "acc_answer": 1.0}
    assert ("Question: which?\nAnswer:", " cc") in lm.ll_requests
    assert (ANSWER_CONTEXT, " cc") in lm.ll_requests


@pytest.mark.parametrize(
    "name, metric",
    [
        ("boolq", "acc_answer"),
        ("openbookqa", "acc_answer"),
        ("hellaswag", "acc_norm"),
        ("piqa", "acc_norm"),
        ("winogrande", "acc"),
        ("mmlu", "acc"),
    ],
)
def test_paper_metric_per_task(name: str, metric: str):
    """Sec. 3: OpenBookQA and BoolQ normalise by P(completion | "Answer:"), the others by characters."""
    assert TASKS[name].paper_metric == metric


def test_ties_go_to_the_first_choice_as_numpy_argmax(scripted):
    task = ThreeChoices()
    result = task.evaluate(scripted(score=lambda c, x: -1.0), task.docs(None), [], RunConfig())
    assert result.examples[0]["pred_acc"] == 0


def test_winogrande_partial_scoring_scores_the_rest_of_the_sentence(shared_data: Path, scripted):
    """Each option goes into the sentence; the shared rest of the sentence is what is scored."""
    task = TASKS["winogrande"]
    doc = task.docs(shared_data)[0]

    def score(context: str, continuation: str) -> float:
        assert continuation == " always got the easier cases."
        return -1.0 if context.endswith("Maria") else -2.0

    lm = scripted(score=score)
    result = task.evaluate(lm, [doc], [], RunConfig())
    assert [c for c, _ in lm.ll_requests] == doc["contexts"]
    assert result.examples[0]["pred_acc"] == 1 and result.metrics["acc"] == 1.0


def test_few_shot_draws_are_seeded_and_never_the_doc_itself(shared_data: Path, scripted):
    pool = TASKS["arc_easy"].docs(shared_data)[:40]
    first = sample_shots(pool, 5, seed=1, doc_id=pool[0]["id"])
    assert first == sample_shots(pool, 5, seed=1, doc_id=pool[0]["id"])
    assert first != sample_shots(pool, 5, seed=2, doc_id=pool[0]["id"])
    assert all(d["id"] != pool[0]["id"] for d in first)
    # The draw for a doc does not depend on --limit: the prompt of doc 0 is the same with 1 or 40 docs.
    lm_a, lm_b = scripted(score=lambda c, x: 0.0), scripted(score=lambda c, x: 0.0)
    task = TASKS["arc_easy"]
    config = RunConfig(shots=3, seed=7)
    task.evaluate(lm_a, pool[:1], pool, config)
    task.evaluate(lm_b, pool, pool, config)
    assert lm_a.ll_requests == lm_b.ll_requests[: len(lm_a.ll_requests)]
    assert lm_a.ll_requests[0][0].count("Question:") == 4  # three shots, then the question


def test_mmlu_shots_come_from_the_same_subject_dev_split(shared_data: Path, scripted):
    task = TASKS["mmlu"]
    docs, pool = task.docs(shared_data), task.fewshot_pool(shared_data)
    doc = next(d for d in docs if d["subject"] == "virology")
    lm = scripted(score=lambda c, x: 0.0)
    task.evaluate(lm, [doc], pool, RunConfig(shots=5))
    context = lm.ll_requests[0][0]
    assert context.startswith(
        "The following are multiple choice questions (with answers) about  virology.\n\n"  # Hendrycks: two spaces
    )
    assert context.count("\nAnswer:") == 6
    virology_dev = [d for d in pool if d["subject"] == "virology"]
    assert all(d["query"] in context for d in virology_dev)
    assert [x for _, x in lm.ll_requests] == [" A", " B", " C", " D"]


def test_mmlu_reports_each_domain(shared_data: Path, scripted):
    task = TASKS["mmlu"]
    docs = task.limit(task.docs(shared_data), 2)  # two per subject, as lm-eval's --limit
    assert len(docs) == 2 * 57
    gold = {d["id"]: d["gold"] for d in docs}
    # Right on STEM, wrong elsewhere: each domain's average must show it.
    stem = {d["id"] for d in docs if d["subject"] in ("anatomy", "astronomy") or "math" in d["subject"]}

    def score(context: str, continuation: str) -> float:
        doc = next(d for d in docs if context.endswith(d["query"]))
        right = " " + "ABCD"[gold[doc["id"]]]
        return 0.0 if (continuation == right) == (doc["id"] in stem) else -1.0

    result = task.evaluate(scripted(score=score), docs, [], RunConfig(shots=0))
    assert result.groups["Humanities"]["acc"] == 0.0 and result.groups["Other"]["acc"] == 0.0
    assert 0.0 < result.groups["STEM"]["acc"] < 1.0
    assert sum(g["n"] for g in result.groups.values()) == len(docs)


@pytest.mark.parametrize(
    "n, c, k", [(10, 0, 1), (10, 3, 1), (10, 3, 2), (10, 3, 5), (10, 10, 4), (7, 2, 7), (5, 1, 3)]
)
def test_pass_at_k_is_the_closed_form(n: int, c: int, k: int):
    """Unbiased pass@k = share of k-subsets of the n samples that contain a correct one (enumerated)."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(4, 1, 5)


def test_majority_vote_ignores_unparsable_and_breaks_ties_by_first_seen():
    assert majority(["3", None, "5", "5", None, None]) == "5"
    assert majority(["7", "9", "9", "7"]) == "7"
    assert majority([None, None]) is None


def test_gsm8k_greedy_and_maj1_at_k_vote_correctly(shared_data: Path, scripted):
    task = GSM8k()
    docs = task.docs(shared_data)[:2]  # gold answers 18 and 3
    replies = {
        docs[0]["question"]: ["#### 17", "so 18", "#### 18", "#### 5"],
        docs[1]["question"]: ["#### 3", "#### 4", "4 cats", "#### 3.0"],
    }

    def reply(context: str, params: SamplingParams) -> str:
        question = context.rsplit("Q: ", 1)[1].removesuffix("\nA:")
        if params.temperature == 0:
            return "They sell 16 - 3 - 4 = 9 eggs.\n#### 18" if question == docs[0]["question"] else "#### 2"
        return replies[question][params.seed - 1234]

    lm = scripted(reply=reply)
    result = task.evaluate(lm, docs, task.docs(shared_data), RunConfig(samples=4, shots=2))
    # Greedy: 18 is right, 2 is wrong. Votes: doc 0 {17, 18, 18, 5} -> 18; doc 1 {3, 4, 4, 3} -> 3 (first seen).
    assert [e["acc"] for e in result.examples] == [1.0, 0.0]
    assert [e["majority"] for e in result.examples] == ["18", "3"]
    assert result.metrics == {"acc": 0.5, "maj1@4": 1.0}
    sampled = [p for _, p in lm.gen_requests if p.temperature > 0]
    assert len(sampled) == 8 and {p.temperature for p in sampled} == {0.6}
    assert all(c.count("Q: ") == 3 for c, _ in lm.gen_requests)  # two shots + the question


def test_math_answers_compare_after_normalisation():
    task = TASKS["math"]
    assert task.extract("so the answer is $\\boxed{\\dfrac{1}{2}}$.") == normalize_math("\\frac12")
    assert task.extract("\\boxed{0.5}") == task.extract_gold("\\frac{1}{2}")
    assert task.extract("\\boxed{\\frac{3}{4}}") != task.extract_gold("\\frac{4}{3}")
    assert task.extract("\\boxed{10^\\circ}") == task.extract_gold("10")
    assert task.extract("Final Answer: The final answer is $7$. I hope it is correct.") == "7"
    assert task.extract("no answer here") is None


def test_closed_book_exact_match_normalises_like_squad():
    assert exact_match("The  Beatles!", ["Beatles"]) == 1.0
    assert exact_match("December 1972", ["14 December 1972 UTC", "December 1972"]) == 1.0
    assert exact_match("1973", ["December 1972"]) == 0.0


@pytest.mark.parametrize("shots", [0, 1, 5, 64])
def test_closed_book_prompt_has_the_paper_format_and_shot_count(shots: int, shared_data: Path, scripted):
    task = TASKS["nq_open"]
    docs = task.docs(shared_data)
    lm = scripted(reply=lambda c, p: " 14 December 1972 UTC\nQ: next")
    result = task.evaluate(lm, docs[:1], docs, RunConfig(shots=shots))
    prompt, params = lm.gen_requests[0]
    assert prompt.startswith("Answer these questions:\nQ: ")
    assert prompt.endswith(f"Q: {docs[0]['question']}\nA:")
    assert prompt.count("\nA:") == shots + 1
    assert params.temperature == 0 and params.stop == ("\n",)
    assert result.metrics["em"] == 1.0 and result.shots == shots
