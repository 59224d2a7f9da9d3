"""OpenAI's request parameters through the official `openai` client: each works as OpenAI documents it
(max_completion_tokens, stream_options, logit_bias, n, logprobs/top_logprobs, echo, token-id prompts,
content parts) or gets OpenAI's 400 naming it. Log-probabilities are checked against a plain forward."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
import torch
from tests.helpers import serving

from llamafoundry.checkpoint import load_model
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.inference.server import Server, ServerLimits

NAME = "stories"
CHAT = [{"role": "user", "content": "A story?"}]


@pytest.fixture(scope="module")
def served(stories_folder) -> Iterator[tuple[Server, str]]:
    model, tokenizer, _ = load_model(stories_folder)
    server = Server(
        # Exact decoding (a float32 cache), so logprobs compare with a plain forward at 1e-4.
        Generator(model, tokenizer, max_seq_len=256, kv_cache_dtype=torch.float32),
        NAME,
        limits=ServerLimits(max_tokens=64, max_concurrent=8, max_batch=8),
    )
    with serving(server) as url:
        yield server, url


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[1] + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(stories_folder):
    """The model and tokenizer, for plain forwards and library generations."""
    model, tokenizer, _ = load_model(stories_folder)
    return model, tokenizer


def _logprobs(model, ids: list[int]) -> torch.Tensor:
    """log P(ids[i] | ids[:i]) for i >= 1, from one plain forward."""
    with torch.no_grad():
        logprobs = model(torch.tensor([ids[:-1]])).float().log_softmax(-1)[0]
    return logprobs.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def _bad_request(call, param: str) -> str:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.status_code == 400 and caught.value.param == param, caught.value.body
    return caught.value.message


def test_max_completion_tokens_is_honoured_with_max_tokens_limits(client):
    short = client.chat.completions.create(model=NAME, messages=CHAT, max_completion_tokens=5, temperature=0)
    same = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=5, temperature=0)
    assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == same.choices[0].message.content
    message = _bad_request(
        lambda: client.chat.completions.create(model=NAME, messages=CHAT, max_completion_tokens=1000),
        "max_completion_tokens",
    )
    assert "at most 64" in message


@pytest.mark.parametrize("chat", [False, True])
def test_include_usage_ends_the_stream_with_a_usage_chunk(client, chat):
    common = dict(model=NAME, max_tokens=6, temperature=0)
    if chat:
        create, fields = client.chat.completions.create, dict(messages=CHAT, **common)
    else:
        create, fields = client.completions.create, dict(prompt="Once upon a time", **common)
    whole = create(**fields)
    chunks = list(create(**fields, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks[:-1])
    plain = list(create(**fields, stream=True))
    assert all(c.usage is None and c.choices for c in plain)
    _bad_request(lambda: create(**fields, stream_options={"include_usage": True}), "stream_options")


def test_logit_bias_forces_and_bans_tokens_greedily(client, reference):
    model, tokenizer = reference
    prompt = "Once upon a time"
    generator = Generator(model, tokenizer, kv_cache_dtype=torch.float32)
    ids = tokenizer.encode(prompt)
    free = generator.generate([ids], SamplingParams(max_new_tokens=4))[0].tokens
    other = 300 if free[0] != 300 else 301  # an ordinary piece the model would not choose first
    for bias, check in (
        ({other: 100.0}, lambda tokens: tokens == [other] * 4),  # +100 forces it
        ({free[0]: -100.0}, lambda tokens: tokens[0] != free[0]),  # -100 bans it
    ):
        params = SamplingParams(max_new_tokens=4, logit_bias=tuple(bias.items()))
        expected = generator.generate([ids], params)[0]
        assert check(expected.tokens), expected.tokens
        reply = client.completions.create(
            model=NAME,
            prompt=prompt,
            max_tokens=4,
            temperature=0,
            logit_bias={str(t): b for t, b in bias.items()},
        )
        assert reply.choices[0].text == expected.text
    # In a batch, each request's bias is its own.
    params = [
        SamplingParams(max_new_tokens=4, logit_bias=((other, 100.0),)),
        SamplingParams(max_new_tokens=4),
    ]
    assert [c.tokens for c in generator.generate([ids, ids], params)] == [[other] * 4, free]
    _bad_request(
        lambda: client.completions.create(model=NAME, prompt="a", logit_bias={"3": 101}), "logit_bias.3"
    )
    _bad_request(
        lambda: client.completions.create(model=NAME, prompt="a", logit_bias={"512": 1}), "logit_bias"
    )


@pytest.mark.parametrize(
    ("endpoint", "field", "value"),
    [
        ("chat", "response_format", {"type": "json_object"}),
        ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("chat", "tool_choice", "auto"),
        ("chat", "functions", [{"name": "f", "parameters": {}}]),
        ("chat", "function_call", "auto"),
        ("chat", "audio", {"voice": "alloy", "format": "wav"}),
        ("chat", "presence_penalty", 0.5),
        ("chat", "store", True),
        ("chat", "echo", True),  # a completions parameter
        ("completions", "suffix", " the end."),
        ("completions", "best_of", 3),
        ("completions", "frequency_penalty", 0.5),
        ("completions", "top_logprobs", 2),  # a chat parameter
        ("completions", "guided_json", {}),  # nobody's parameter
    ],
)
def test_parameters_not_implemented_get_openais_400_naming_them(client, endpoint, field, value):
    if endpoint == "chat":
        call = lambda: client.chat.completions.create(  # noqa: E731
            model=NAME, messages=CHAT, max_tokens=2, extra_body={field: value}
        )
    else:
        call = lambda: client.completions.create(  # noqa: E731
            model=NAME, prompt="Hi", max_tokens=2, extra_body={field: value}
        )
    _bad_request(call, field)


def test_parameters_at_values_that_ask_nothing_are_accepted(client):
    chat = client.chat.completions.create(
        model=NAME,
        messages=CHAT,
        max_tokens=2,
        response_format={"type": "text"},
        user="someone",
        store=False,
        metadata={"run": "1"},
    )
    assert chat.choices[0].finish_reason in ("stop", "length")
    done = client.completions.create(model=NAME, prompt="Hi", max_tokens=2, suffix=None, best_of=1)
    assert done.choices[0].finish_reason in ("stop", "length")


def test_n_samples_are_batched_seeded_apart_and_reproducible(served, client):
    server, _ = served
    fields = dict(model=NAME, prompt=["Once upon a time", "The dog"], max_tokens=12, temperature=1.0, seed=7)
    batches, requests = server.engine.batches_run, server.engine.requests_run
    reply = client.completions.create(n=3, **fields)
    assert server.engine.batches_run - batches == 1 and server.engine.requests_run - requests == 6
    assert [c.index for c in reply.choices] == list(range(6))
    texts = [c.text for c in reply.choices]
    assert len(set(texts[:3])) == 3  # distinct seeds: distinct samples
    assert texts == [c.text for c in client.completions.create(n=3, **fields).choices]
    single = client.completions.create(**fields)
    assert [c.text for c in single.choices] == [texts[0], texts[3]]  # sample 0 keeps the request's seed
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert reply.usage.completion_tokens == sum(  # every choice's tokens count once
        client.completions.create(**{**fields, "prompt": p}, n=3).usage.completion_tokens
        for p in fields["prompt"]
    )
    chat = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=8, n=2, seed=1)
    assert [c.index for c in chat.choices] == [0, 1]
    # n counts against the requests in flight: 2 prompts x 5 > max_concurrent (8) can never be admitted.
    _bad_request(lambda: client.completions.create(**{**fields, "n": 5}), "n")
    assert server.in_flight == 0


def test_completion_logprobs_are_the_models_and_shaped_as_openais(client, reference):
    model, tokenizer = reference
    prompt = "Once upon a time"
    reply = client.completions.create(
        model=NAME, prompt=prompt, max_tokens=10, temperature=0.9, seed=3, logprobs=2
    )
    choice = reply.choices[0]
    logprobs = choice.logprobs
    ids = tokenizer.encode(prompt)
    plain = Generator(model, tokenizer, kv_cache_dtype=torch.float32).generate(
        [ids], SamplingParams(max_new_tokens=10, temperature=0.9, seed=3)
    )[0]
    generated = plain.tokens + ([tokenizer.eos_id] if plain.finish_reason == "stop" else [])
    assert len(logprobs.tokens) == reply.usage.completion_tokens == len(generated)
    # Before temperature: the model's own distribution.
    expected = _logprobs(model, ids + generated)[len(ids) - 1 :]
    assert logprobs.token_logprobs == pytest.approx(expected.tolist(), abs=1e-4)
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(generated))]
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert 2 <= len(top) <= 3 and top[token] == logprob  # the 2 likeliest, and the token itself
        assert max(top.values()) >= logprob


def test_echo_scores_the_prompt_in_one_forward(client, reference):
    """What lm-eval's loglikelihood requests send: token ids, echo, logprobs, max_tokens 0 or 1."""
    model, tokenizer = reference
    ids = tokenizer.encode("The little dog ran to the park")
    expected = _logprobs(model, ids).tolist()
    for max_tokens in (0, 1):
        reply = client.completions.create(
            model=NAME, prompt=[ids, ids[:4]], max_tokens=max_tokens, temperature=0, logprobs=1, echo=True
        )
        choice = reply.choices[0]
        logprobs = choice.logprobs
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        assert logprobs.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
        assert len(logprobs.tokens) == len(ids) + max_tokens
        assert choice.text.startswith(tokenizer.decode(ids))
        assert reply.choices[1].logprobs.token_logprobs[1:4] == pytest.approx(expected[:3], abs=1e-4)
        assert reply.usage.completion_tokens == 2 * max_tokens
    greedy = max(logprobs.top_logprobs[-1].values())
    assert logprobs.token_logprobs[-1] == pytest.approx(greedy)  # temperature 0: the likeliest token
    echoed = client.completions.create(model=NAME, prompt="Say it twice", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("Say it twice") and echoed.choices[0].logprobs is None
    streamed = list(client.completions.create(model=NAME, prompt=[ids], max_tokens=0, echo=True, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == tokenizer.decode(ids)
    _bad_request(lambda: client.completions.create(model=NAME, prompt="Hi", max_tokens=0), "max_tokens")
    _bad_request(lambda: client.completions.create(model=NAME, prompt="Hi", logprobs=6), "logprobs")


def test_chat_logprobs_and_their_stream(served, client, reference):
    server, _ = served
    model, tokenizer = reference
    fields = dict(model=NAME, messages=CHAT, max_tokens=8, seed=5, logprobs=True, top_logprobs=3)
    reply = client.chat.completions.create(**fields)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    transcript = tokenizer.encode("User: A story?\nAssistant:")
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=5, stop=("\nUser:",))
    plain = Generator(model, tokenizer, kv_cache_dtype=torch.float32).generate([transcript], params)[0]
    generated = plain.tokens + ([tokenizer.eos_id] if len(plain.tokens) < len(content) else [])
    expected = _logprobs(model, transcript + generated)[len(transcript) - 1 :]
    assert [c.logprob for c in content] == pytest.approx(expected.tolist(), abs=1e-4)
    for entry in content:
        assert entry.bytes == list(entry.token.encode()) and len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
    chunks = list(client.chat.completions.create(**fields, stream=True))
    streamed = [
        entry
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for entry in c.choices[0].logprobs.content
    ]
    assert streamed == content
    none = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=2)
    assert none.choices[0].logprobs is None
    _bad_request(
        lambda: client.chat.completions.create(model=NAME, messages=CHAT, top_logprobs=2), "top_logprobs"
    )
    _bad_request(
        lambda: client.chat.completions.create(model=NAME, messages=CHAT, logprobs=True, top_logprobs=21),
        "top_logprobs",
    )
    assert server.in_flight == 0


def test_content_parts_are_text_joined_and_other_parts_refused(client):
    parts = [{"type": "text", "text": "A story?"}]
    as_parts = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0
    )
    as_text = client.chat.completions.create(model=NAME, messages=CHAT, max_tokens=6, temperature=0)
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    assert as_parts.usage == as_text.usage
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    message = _bad_request(
        lambda: client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": [*parts, image]}], max_tokens=2
        ),
        "messages.[0].content",
    )
    assert "image_url" in message


def test_a_message_field_the_server_would_ignore_is_refused(served):
    _, url = served
    body = {"model": NAME, "messages": [{"role": "user", "content": "Hi", "name": "bob"}], "max_tokens": 2}
    reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages.0.name"
