"""The OpenAI-compatible server, driven by the official `openai` client over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from llamafoundry.checkpoint import load_model
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.inference.server import Server, ServerLimits, create_app

KEY = "sk-test-key"
NAME = "stories"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server on a free local port, in a thread of this process, stopped at the end."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=30)

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _server(folder, **limits: int) -> Server:
    model, tokenizer, _ = load_model(folder)
    generator = Generator(model, tokenizer, max_seq_len=256)
    return Server(generator, NAME, api_key=KEY, limits=ServerLimits(**limits))


@pytest.fixture(scope="module")
def running(stories_folder) -> Iterator[Running]:
    with Running(_server(stories_folder, max_tokens=64, max_concurrent=40, max_batch=8)) as r:
        yield r


def test_completion_equals_the_library_and_counts_tokens(running, stories_folder):
    reply = running.client().completions.create(
        model=NAME, prompt="Once upon a time", max_tokens=20, temperature=0
    )
    model, tokenizer, _ = load_model(stories_folder)
    expected = Generator(model, tokenizer).generate(["Once upon a time"], SamplingParams(max_new_tokens=20))[
        0
    ]
    assert reply.object == "text_completion" and reply.model == NAME
    assert reply.choices[0].text == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.completion_tokens == len(expected.tokens) + (expected.finish_reason == "stop")


def test_chat_completion_applies_the_template_and_models(running, stories_folder, monkeypatch):
    engine = running.server.engine
    fed: list[list[int]] = []  # the prompt ids the server hands the model

    def submit(prompt: list[int], params: SamplingParams):
        fed.append(list(prompt))
        return type(engine).submit(engine, prompt, params)

    monkeypatch.setattr(engine, "submit", submit)
    client = running.client()
    reply = client.chat.completions.create(
        model=NAME,
        max_tokens=12,
        seed=4,
        messages=[
            {"role": "system", "content": "You tell stories."},
            {"role": "user", "content": "A story?"},
        ],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("stop", "length")
    # The default template writes the dialogue as a transcript and asks for the assistant's turn.
    model, tokenizer, _ = load_model(stories_folder)
    transcript = tokenizer.encode("You tell stories.\n\nUser: A story?\nAssistant:", bos=True)
    assert fed == [transcript]
    assert reply.usage.prompt_tokens == len(transcript)
    # The reply continues that transcript (OpenAI's default temperature 1, this seed) up to a next turn.
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=4, stop=("\nUser:",))
    expected = Generator(model, tokenizer).generate([transcript], params)[0]
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(running.url + "/health").json()["status"] == "ok"  # no key needed


def test_streams_add_up_to_the_whole_reply(running):
    client = running.client()
    whole = client.completions.create(model=NAME, prompt="The king", max_tokens=30, temperature=0.8, seed=11)
    chunks = list(
        client.completions.create(
            model=NAME, prompt="The king", max_tokens=30, temperature=0.8, seed=11, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    chat = list(
        client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=10, seed=1, stream=True
        )
    )
    assert chat[0].choices[0].delta.role == "assistant"
    assert chat[-1].choices[0].finish_reason in ("stop", "length")
    assert len(chat) >= 2


def test_32_concurrent_requests_all_succeed_and_are_batched(running):
    client = running.client()
    engine = running.server.engine
    batches, requests = engine.batches_run, engine.requests_run

    def ask(i: int) -> str:
        reply = client.completions.create(
            model=NAME, prompt=f"Story number {i}:", max_tokens=24, temperature=0.7, seed=i
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        return reply.choices[0].text

    with ThreadPoolExecutor(32) as pool:
        texts = list(pool.map(ask, range(32)))
    assert len(texts) == 32
    assert engine.requests_run - requests == 32
    assert engine.batches_run - batches < 32  # requests that waited were decoded together
    assert running.server.in_flight == 0


def _raw(running: Running, path: str, body: bytes | dict, key: str = KEY) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        running.url + path,
        content=content,
        timeout=60,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def _assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code


def test_errors_are_openai_shaped_and_the_server_keeps_serving(running):
    client = running.client()
    with pytest.raises(openai.BadRequestError) as oversized:
        client.completions.create(model=NAME, prompt="word " * 400, max_tokens=10)
    assert oversized.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=NAME, prompt="hi", max_tokens=1000)  # over the server's ceiling
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=5)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        running.client("sk-wrong").completions.create(model=NAME, prompt="hi", max_tokens=5)
    assert wrong_key.value.code == "invalid_api_key"
    _assert_error(_raw(running, "/v1/completions", b'{"model": "stories", "prompt": '), 400, "invalid_json")
    _assert_error(_raw(running, "/v1/completions", {"prompt": "no model"}), 400)
    _assert_error(_raw(running, "/v1/completions", {"model": NAME, "prompt": "hi", "temperature": -1}), 400)
    _assert_error(
        _raw(running, "/v1/chat/completions", {"model": NAME, "messages": [{"role": "x", "content": ""}]}),
        400,
    )
    _assert_error(_raw(running, "/v1/completions", {"model": NAME, "prompt": "hi", "n": 0}), 400)
    _assert_error(_raw(running, "/v1/nowhere", {}), 404)
    reply = client.completions.create(model=NAME, prompt="Still there?", max_tokens=5)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_requests_beyond_the_concurrency_limit_get_429(stories_folder):
    with Running(_server(stories_folder, max_tokens=200, max_concurrent=1)) as running:
        client = running.client()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                client.completions.create, model=NAME, prompt="Long", max_tokens=200, temperature=0.9, seed=0
            )
            deadline = time.monotonic() + 30
            while running.server.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(openai.RateLimitError) as limited:
                client.completions.create(model=NAME, prompt="Me too", max_tokens=5)
            assert limited.value.code == "rate_limit_exceeded"
            assert slow.result().choices[0].text is not None
        assert (
            client.completions.create(model=NAME, prompt="Now me", max_tokens=5).choices[0].text is not None
        )
