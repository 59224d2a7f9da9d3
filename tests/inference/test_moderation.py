"""`serve --moderation`: completions a toxicity scorer blocks end with finish_reason "content_filter" and are
not returned, streaming or not, through the official `openai` client; streams release only scored text."""

from __future__ import annotations

import openai
import pytest
from tests.helpers import serving

from llamafoundry.errors import UserError
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.server import Moderation, Server
from llamafoundry.toxicity import ProfanityScorer


class BlocksLongText:
    """Scores 1.0 once a text is longer than `limit` characters; records every text it scored."""

    name = "scripted"

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, []

    def score(self, texts):
        self.seen += texts
        return [1.0 if len(t) > self.limit else 0.0 for t in texts]


@pytest.fixture
def generator(random_model, meta_tokenizer) -> Generator:
    return Generator(random_model(), meta_tokenizer, max_seq_len=256)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_blocked_completions_are_withheld_streaming_or_not(generator):
    scorer = BlocksLongText(limit=0)  # every non-empty completion is blocked
    with serving(Server(generator, "tiny", moderation=Moderation(scorer))) as url:
        client = _client(url)
        done = client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0
        )
        assert (done.choices[0].text, done.choices[0].finish_reason) == ("", "content_filter")
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=12, temperature=0
        )
        assert chat.choices[0].finish_reason == "content_filter" and not chat.choices[0].message.content
        chunks = list(
            client.completions.create(model="tiny", prompt="Once", max_tokens=12, temperature=0, stream=True)
        )
        assert "".join(c.choices[0].text for c in chunks) == ""
        assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_stream_releases_only_text_scored_below_the_threshold(generator):
    scorer = BlocksLongText(limit=30)
    moderation = Moderation(scorer, window=8)
    with serving(Server(generator, "tiny", moderation=moderation)) as url:
        chunks = list(
            _client(url).completions.create(
                model="tiny",
                prompt="Once upon a time",
                max_tokens=40,
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},
            )
        )
    released = "".join(c.choices[0].text for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert 0 < len(released) <= 30  # what passed a check went out; the rest never did
    assert released in scorer.seen  # every released prefix was scored first


def test_unblocked_completions_are_untouched(generator):
    plain = Generator(generator.model, generator.tokenizer, max_seq_len=256)
    with serving(Server(plain, "tiny")) as url:
        expected = _client(url).completions.create(model="tiny", prompt="Once", max_tokens=12, temperature=0)
    with serving(Server(generator, "tiny", moderation=Moderation(BlocksLongText(limit=10_000)))) as url:
        moderated = _client(url).completions.create(model="tiny", prompt="Once", max_tokens=12, temperature=0)
    assert moderated.choices[0].text == expected.choices[0].text
    assert moderated.choices[0].finish_reason == expected.choices[0].finish_reason


def test_moderation_spec_parses_scorer_and_threshold():
    parsed = Moderation.parse("profanity:0.8")
    assert isinstance(parsed.scorer, ProfanityScorer) and parsed.threshold == 0.8
    assert Moderation.parse("profanity").threshold == 0.5
    with pytest.raises(UserError, match="threshold"):
        Moderation.parse("profanity:1.5")
    with pytest.raises(UserError, match="unknown toxicity scorer"):
        Moderation.parse("vibes:0.5")
