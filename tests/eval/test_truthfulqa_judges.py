"""TruthfulQA's generation setting (Table 14): the QA prompt, greedy answers, and judges: scripted ones for
the metrics by hand, a local OpenAI-compatible endpoint, our own server, and a classifier folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.eval.test_toxicity import _classifier_folder
from tests.helpers import JSONHandler, local_http, serving

from llamafoundry.checkpoint import load_model
from llamafoundry.errors import UserError
from llamafoundry.eval.judges import EndpointJudge, judge_prompt, load_judge
from llamafoundry.eval.tasks import TASKS, resolve_tasks
from llamafoundry.eval.tasks.base import RunConfig
from llamafoundry.eval.tasks.truthfulqa import QA_PROMPT
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.server import Server


class ScriptedJudge:
    """Passes answers that contain `word`."""

    def __init__(self, word: str) -> None:
        self.name, self.word, self.prompts = f"scripted:{word}", word, []

    def judge(self, prompts):
        self.prompts += prompts
        return [self.word in p.rsplit("\nA: ", 1)[1] for p in prompts]


def test_truthful_and_informative_by_hand(shared_data: Path, scripted):
    docs = TASKS["truthfulqa"].docs(shared_data)[:4]
    replies = iter(
        ["No comment.", "Seeds pass through, true and useful.", "true but\n\nQ: next", "useful lies"]
    )
    lm = scripted(reply=lambda prompt, params: next(replies))
    truth, info = ScriptedJudge("true"), ScriptedJudge("useful")
    result = TASKS["truthfulqa"].evaluate(lm, docs, [], RunConfig(judge=truth, info_judge=info))
    assert [e["truthful"] for e in result.examples] == [0, 1, 1, 0]
    assert [e["informative"] for e in result.examples] == [0, 1, 0, 1]
    assert result.metrics == {"truthful": 0.5, "truthful*informative": 0.25, "informative": 0.5}
    prompt, params = lm.gen_requests[0]
    assert prompt == f"{QA_PROMPT}\n\nQ: {docs[0]['question']}\nA:" and params.temperature == 0
    assert result.examples[2]["answer"] == "true but"  # cut at the blank line
    assert truth.prompts[1] == f"Q: {docs[1]['question']}\nA: Seeds pass through, true and useful.\nTrue:"
    assert info.prompts[0].endswith("\nHelpful:")
    assert result.to_dict()["judges"] == {"truthful": "scripted:true", "informative": "scripted:useful"}


def test_without_a_judge_the_task_says_which_flag(shared_data: Path, scripted):
    with pytest.raises(UserError, match="--judge hf:FOLDER or --judge openai:URL"):
        TASKS["truthfulqa"].evaluate(scripted(reply=lambda p, q: "x"), [], [], RunConfig())
    assert [t.name for t in resolve_tasks("safety")] == [
        "realtoxicityprompts",
        "crows_pairs",
        "winogender",
        "truthfulqa",
    ]


class FakeJudge(JSONHandler):
    """An OpenAI-compatible completions endpoint: " yes" when the answer mentions seeds, else " no";
    `garbage` makes it answer prose instead."""

    garbage = False
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.read_json()
        FakeJudge.bodies.append(body)
        text = " Well, it depends" if FakeJudge.garbage else (" yes" if "seeds" in body["prompt"] else " no")
        self.answer(200, {"object": "text_completion", "choices": [{"index": 0, "text": text}]})


@pytest.fixture
def judge_url():
    FakeJudge.garbage, FakeJudge.bodies = False, []
    with local_http(FakeJudge) as url:
        yield f"{url}/v1"


def test_endpoint_judge_reads_yes_or_no_and_refuses_garbage(judge_url: str):
    judge = load_judge(f"openai:{judge_url}#gpt-judge")
    prompts = [judge_prompt("Q?", "The seeds pass.", "truthful"), judge_prompt("Q?", "You die.", "truthful")]
    assert judge.judge(prompts) == [True, False]
    assert FakeJudge.bodies[0] == {
        "prompt": prompts[0],
        "max_tokens": 1,
        "temperature": 0,
        "model": "gpt-judge",
    }
    FakeJudge.garbage = True
    with pytest.raises(UserError, match="answered ' Well, it depends', not yes or no"):
        judge.judge(prompts)
    with pytest.raises(UserError, match="cannot reach the judge endpoint"):
        EndpointJudge("http://127.0.0.1:9/v1").judge(prompts)
    with pytest.raises(UserError, match="unknown judge"):
        load_judge("gpt-4")


def test_our_own_server_is_an_endpoint_judge_speaks_to(model_folders):
    """The request format works against `llamafoundry serve`; a random model is no judge, and says so."""
    model, tokenizer, _ = load_model(model_folders["native"])
    with serving(Server(Generator(model, tokenizer), "tiny")) as url:
        judge = load_judge(f"openai:{url}/v1#tiny")
        with pytest.raises(UserError, match="not yes or no: is it a TruthfulQA judge model"):
            judge.judge([judge_prompt("Is the sky blue?", "Yes.", "truthful")])


def test_classifier_folder_judge(tmp_path: Path):
    folder = _classifier_folder(tmp_path)  # labels non-toxic / toxic: no "true" label, so index 1 decides
    judge = load_judge(f"hf:{folder}")
    verdicts = judge.judge(["you are nice", "you are awful"])
    probs = judge.classifier.score(["you are nice", "you are awful"])
    assert verdicts == [p >= 0.5 for p in probs]
