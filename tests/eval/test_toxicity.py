"""RealToxicityPrompts (Table 11) and the toxicity scorers: the task's figures by hand with a scripted LM and
scorer, the offline scorer on real text, a Hugging Face classifier folder, and the Perspective client
against a local server that speaks its API (rate limits and errors included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers import JSONHandler, local_http

from llamafoundry.errors import UserError
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig
from llamafoundry.eval.tasks.toxicity import RESPECTFUL
from llamafoundry.toxicity import HFClassifierScorer, PerspectiveScorer, ProfanityScorer, load_scorer


class ScriptedScorer:
    """Toxicity = the number of "!" in the text / 4."""

    name = "scripted"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, texts):
        self.seen += texts
        return [min(1.0, t.count("!") / 4) for t in texts]


def test_real_files_alternate_subsets(shared_data: Path):
    docs = TASKS["realtoxicityprompts"].docs(shared_data)
    assert len(docs) == 2396  # 1,200 non-toxic + 1,196 toxic prompts (SOURCES.md)
    assert [d["subset"] for d in docs[:4]] == ["nontoxic", "toxic", "nontoxic", "toxic"]
    assert sum(d["subset"] == "toxic" for d in docs) == 1196


def test_greedy_means_per_variant_and_subset_by_hand(shared_data: Path, scripted):
    docs = TASKS["realtoxicityprompts"].docs(shared_data)[:6]  # 3 non-toxic, 3 toxic

    def reply(prompt: str, params) -> str:
        # Respectful continuations are calmer; toxic prompts get louder continuations.
        index = next(i for i, d in enumerate(docs) if prompt.endswith(d["prompt"]))
        bangs = index + (0 if prompt.startswith(RESPECTFUL) else 1)
        return " word" + "!" * bangs + " and more words that a 20-token cut would keep"

    scorer = ScriptedScorer()
    lm = scripted(reply=reply)
    result = TASKS["realtoxicityprompts"].evaluate(lm, docs, [], RunConfig(toxicity_scorer=scorer))
    basic = [min(1, (i + 1) / 4) for i in range(6)]
    respectful = [min(1, i / 4) for i in range(6)]
    assert result.metrics["basic"] == pytest.approx(sum(basic) / 6)
    assert result.metrics["respectful"] == pytest.approx(sum(respectful) / 6)
    assert result.groups["basic toxic"]["toxicity"] == pytest.approx((basic[1] + basic[3] + basic[5]) / 3)
    assert result.groups["respectful nontoxic"]["toxicity"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert all(p.max_new_tokens == 20 and p.temperature == 0 for _, p in lm.gen_requests)
    assert {c for c, _ in lm.gen_requests} >= {RESPECTFUL + docs[0]["prompt"], docs[0]["prompt"]}
    assert scorer.seen[0].startswith(" word")  # the continuation alone is scored, not the prompt
    assert result.to_dict()["toxicity_scorer"] == "scripted"


def test_sampled_expected_maximum_and_probability_by_hand(shared_data: Path, scripted):
    docs = TASKS["realtoxicityprompts"].docs(shared_data)[:2]
    # Sample j of 3 has j "!" (toxicity j/4); the greedy continuation has none.
    lm = scripted(reply=lambda prompt, p: "!" * (p.seed - 1234) if p.temperature else "calm")
    result = TASKS["realtoxicityprompts"].evaluate(
        lm, docs, [], RunConfig(samples=3, toxicity_scorer=ScriptedScorer())
    )
    # Each prompt's most toxic sample: 2/4 = 0.5, which counts as toxic (>= 0.5).
    assert result.metrics["basic expected_max@3"] == pytest.approx(0.5)
    assert result.metrics["basic toxicity_prob@3"] == 1.0
    assert result.metrics["basic"] == 0.0
    sampled = [p for _, p in lm.gen_requests if p.temperature]
    assert {p.top_p for p in sampled} == {0.9} and len(sampled) == 2 * 2 * 3


def test_offline_scorer_tells_insults_from_greetings():
    scores = ProfanityScorer().score(["have a lovely day", "you are a stupid idiot"])
    assert scores[0] < 0.5 < scores[1]


def _classifier_folder(root: Path, multi_label: bool = False) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "you", "are", "nice", "awful"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    labels = {0: "toxic", 1: "severe_toxic", 2: "insult"} if multi_label else {0: "non-toxic", 1: "toxic"}
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        problem_type="multi_label_classification" if multi_label else None,
    )
    torch.manual_seed(0)
    folder = root / ("multi" if multi_label else "binary")
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("multi_label", [False, True])
def test_hf_classifier_scores_its_toxic_label(tmp_path: Path, multi_label: bool):
    folder = _classifier_folder(tmp_path, multi_label)
    scorer = load_scorer(f"hf:{folder}")
    assert isinstance(scorer, HFClassifierScorer)
    texts = ["you are nice", "you are awful", "nice"]
    scores = scorer.score(texts)
    batch = scorer.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = scorer.model(**batch).logits
    expected = logits.sigmoid()[:, 0] if multi_label else logits.softmax(-1)[:, 1]
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(0 <= s <= 1 for s in scores)


class FakePerspective(JSONHandler):
    """Speaks the Perspective API: 429 for the first `throttle` requests, 403 for a wrong key."""

    throttle = 0
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.read_json()
        FakePerspective.bodies.append(body)
        if "key=good" not in self.path:
            return self.answer(
                403, {"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}
            )
        if FakePerspective.throttle > 0:
            FakePerspective.throttle -= 1
            return self.answer(429, {"error": {"code": 429, "message": "Quota exceeded"}})
        value = 0.9 if "awful" in body["comment"]["text"] else 0.1
        self.answer(
            200, {"attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}}}
        )


@pytest.fixture
def perspective_url():
    FakePerspective.bodies, FakePerspective.throttle = [], 0
    with local_http(FakePerspective) as url:
        yield f"{url}/v1alpha1/comments:analyze"


def test_perspective_client_sends_the_api_request_and_retries_on_429(perspective_url: str):
    FakePerspective.throttle = 2
    scorer = PerspectiveScorer(key="good", url=perspective_url, qps=100)
    assert scorer.score(["you are awful", "you are nice", ""]) == [0.9, 0.1, 0.0]
    assert len(FakePerspective.bodies) == 4  # two throttled, then one per non-empty text
    assert FakePerspective.bodies[-1] == {
        "comment": {"text": "you are nice"},
        "languages": ["en"],
        "requestedAttributes": {"TOXICITY": {}},
        "doNotStore": True,
    }


def test_perspective_errors_are_one_clear_line(perspective_url: str, monkeypatch):
    with pytest.raises(UserError, match="Perspective API refused the request \\(403: API key not valid.\\)"):
        PerspectiveScorer(key="bad", url=perspective_url, qps=100).score(["hello"])
    FakePerspective.throttle = 10
    with pytest.raises(UserError, match="still answers 429 after 2 retries"):
        PerspectiveScorer(key="good", url=perspective_url, qps=100, retries=2).score(["hello"])
    with pytest.raises(UserError, match="cannot reach the Perspective API"):
        PerspectiveScorer(key="good", url="http://127.0.0.1:9/analyze", qps=100).score(["hello"])
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(UserError, match="PERSPECTIVE_API_KEY"):
        load_scorer("perspective")
    with pytest.raises(UserError, match="unknown toxicity scorer"):
        load_scorer("vibes")


def test_a_failing_task_leaves_the_others_results_written(
    cli, model_folders, shared_data: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    out = tmp_path / "results"
    done = cli(
        "eval",
        str(model_folders["native"]),
        "--tasks",
        "realtoxicityprompts,winogender",
        "--limit",
        "4",
        "--data-dir",
        str(shared_data),
        "--toxicity-scorer",
        "perspective",
        "-o",
        str(out),
    )
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "realtoxicityprompts" in done.stderr
    assert "PERSPECTIVE_API_KEY" in done.stderr and "Traceback" not in done.stderr
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["task"] for r in results] == ["realtoxicityprompts", "winogender"]
    assert "PERSPECTIVE_API_KEY" in results[0]["error"] and results[1]["n"] == 4
    assert "did not run" in (out / "results.md").read_text()


def test_a_missing_scorer_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # what an environment without it imports
    with pytest.raises(UserError, match="pip install 'llamafoundry\\[safety\\]'"):
        load_scorer("profanity")
