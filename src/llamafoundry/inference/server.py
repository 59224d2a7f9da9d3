"""An OpenAI-compatible HTTP API (FastAPI + uvicorn): completions, chat completions, models, health.

The official `openai` client works against it unchanged: the same routes, request fields, response
objects, server-sent-event streams ending in `data: [DONE]`, and errors as
`{"error": {"message", "type", "param", "code"}}` with the status codes OpenAI uses (400 bad request,
401 bad API key, 404 unknown model, 413 body too large, 429 too many requests in flight). Limits protect
the one model: prompt + max_tokens must fit the context, max_tokens has a ceiling, and at most
`max_concurrent` requests may be in flight. Decoding happens on the `BatchingEngine`'s thread.

A bad request fails alone. Before anything reads a body, a gate checks the API key (a client without it
learns nothing from how its body would be parsed) and the body's size (a huge body is never parsed or
tokenized); every field's range is checked as the body is parsed, so nothing out of range reaches the
model; prompts are tokenized on a worker thread, so a long one never holds up the event loop (/health,
the other clients); and the engine keeps an error that one request causes to that request.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.errors import UserError
from llamafoundry.inference.chat import ChatTemplate, render_chat
from llamafoundry.inference.engine import BatchingEngine
from llamafoundry.inference.generate import Generator, StepEvent
from llamafoundry.inference.sampling import PENALTY_RANGE, SEED_RANGE, SamplingParams

MAX_STOP = 4  # stop sequences per request, as OpenAI allows


@dataclass(frozen=True)
class ServerLimits:
    max_tokens: int = 1024  # ceiling on a request's max_tokens
    max_concurrent: int = 64  # requests in flight (queued or decoding); more get 429
    max_batch: int = 8  # requests decoded together
    # Bytes in a request body; more get 413. None: 32 per token of context plus 64 KiB, room for a
    # prompt that fills the context even as JSON-escaped text or token ids, and for the other fields.
    max_request_bytes: int | None = None

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserError(f"invalid server limits: {name} must be a positive integer, got {value!r}")

    def request_bytes(self, context: int) -> int:
        """The body size limit for a model of this context (tokens)."""
        return self.max_request_bytes or 32 * context + 65536


def check_api_key(key: str | None) -> None:
    """A UserError for a key that would not protect the server as meant: empty (anyone gets in) or with
    spaces around it (no client could send it)."""
    if key is not None and (not key.strip() or key != key.strip()):
        raise UserError(
            "the API key (--api-key or $LLAMAFOUNDRY_API_KEY) is empty or has spaces around it; "
            "give a key, or leave both unset to serve without one"
        )


@dataclass(frozen=True)
class Moderation:
    """Completions a toxicity scorer (`llamafoundry.toxicity`) scores at `threshold` or more end with
    finish_reason "content_filter" (OpenAI's value) and are not returned. Streams release text only after
    the completion so far has been scored, every `window` characters and at the end."""

    scorer: Any
    threshold: float = 0.5
    window: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"--moderation threshold must be in (0, 1], got {self.threshold}")

    @classmethod
    def parse(cls, spec: str) -> Moderation:
        """`SCORER[:THRESHOLD]`, e.g. `profanity`, `profanity:0.8`, `hf:models/toxic-bert:0.7`."""
        from llamafoundry.toxicity import load_scorer

        scorer, _, last = spec.rpartition(":")
        try:
            threshold = float(last)
        except ValueError:
            scorer, threshold = spec, 0.5
        return cls(load_scorer(scorer), threshold)

    def blocks(self, text: str) -> bool:
        return self.scorer.score([text])[0] >= self.threshold


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return _error(self.status, self.message, self.type, self.param, self.code)


def _error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _finite(default: float, **bounds: float) -> Any:
    return Field(default, allow_inf_nan=False, **bounds)


class _Sampling(BaseModel):
    """Fields shared by both endpoints (OpenAI's names, defaults and ranges, plus top_k and
    repetition_penalty), each bounded to what the sampler takes."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)  # its ceiling is the server's (see Server.sampling)
    temperature: float = _finite(1.0, ge=0, le=2)
    top_p: float = _finite(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=2**31 - 1)  # beyond the vocabulary it keeps every token
    repetition_penalty: float = _finite(1.0, ge=PENALTY_RANGE[0], le=PENALTY_RANGE[1])
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = 1
    logprobs: Any = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, body: Any) -> Any:
        # JSON's "\ud800" escapes parse to lone surrogates, which no tokenizer (or UTF-8 reply) can encode.
        if _has_lone_surrogate(body):
            raise ValueError(
                "a string holds a lone UTF-16 surrogate (\\ud800 to \\udfff), which is not text; "
                "send valid Unicode"
            )
        return body


def _has_lone_surrogate(body: Any) -> bool:
    pending = [body]  # a loop, not recursion: a body may nest as deep as the JSON parser allows
    while pending:
        value = pending.pop()
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            pending += value
    return False


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage]


class Server:
    """The app's state: generator, engine, limits, the name it answers to, an optional API key."""

    def __init__(
        self,
        generator: Generator,
        model_name: str,
        *,
        api_key: str | None = None,
        limits: ServerLimits | None = None,
        chat_template: ChatTemplate | None = None,
        moderation: Moderation | None = None,
    ) -> None:
        if generator.tokenizer is None:
            raise UserError(
                "serving needs a tokenizer and this model has none; pass --tokenizer tokenizer.model"
            )
        check_api_key(api_key)
        self.generator, self.model_name, self.api_key = generator, model_name, api_key
        self.limits = limits or ServerLimits()
        self.max_request_bytes = self.limits.request_bytes(generator.max_seq_len)
        self.chat_template = chat_template or ChatTemplate()
        self.moderation = moderation
        self.engine = BatchingEngine(generator, self.limits.max_batch)
        self.in_flight = 0
        self.created = int(time.time())

    def check_key(self, headers: Headers) -> None:
        if self.api_key is None:
            return
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    def sampling(self, body: _Sampling, prompt_len: int, extra_stop: tuple[str, ...] = ()) -> SamplingParams:
        if body.model != self.model_name:
            raise APIError(
                404,
                f"The model `{body.model}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )
        for name, unsupported in (
            ("n", body.n != 1),
            ("logprobs", body.logprobs not in (None, False)),
            ("presence_penalty", body.presence_penalty != 0),
            ("frequency_penalty", body.frequency_penalty != 0),
            ("echo", getattr(body, "echo", False)),
        ):
            if unsupported:
                raise APIError(
                    400, f"`{name}` is not supported by this server; leave it at its default.", param=name
                )
        context = self.generator.max_seq_len
        room = context - prompt_len
        max_tokens = min(room, self.limits.max_tokens) if body.max_tokens is None else body.max_tokens
        if max_tokens > self.limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens is {max_tokens} but this server allows at most {self.limits.max_tokens}.",
                param="max_tokens",
            )
        if room < 1 or max_tokens > room:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_len + max(max_tokens, 1)} tokens ({prompt_len} in the prompt, "
                f"{max(max_tokens, 1)} for the completion). Shorten the prompt or lower max_tokens.",
                param="max_tokens" if room >= 1 else "prompt",
                code="context_length_exceeded",
            )
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP:
            raise APIError(400, f"stop has {len(stops)} sequences; give at most {MAX_STOP}.", param="stop")
        try:
            return SamplingParams(
                max_new_tokens=max_tokens,
                temperature=body.temperature,
                top_k=body.top_k,
                top_p=body.top_p,
                repetition_penalty=body.repetition_penalty,
                stop=tuple(stops) + extra_stop,
                seed=body.seed,
            )
        except UserError as exc:
            raise APIError(400, str(exc)) from None

    def encode_prompts(self, prompt: str | list[str] | list[int]) -> list[list[int]]:
        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt is empty; give some text.", param="prompt")
        if len(prompts) > self.limits.max_concurrent:
            raise APIError(
                400,
                f"prompt holds {len(prompts)} prompts; this server takes at most "
                f"{self.limits.max_concurrent} in one request.",
                param="prompt",
            )
        try:
            return [self.generator.encode(p) for p in prompts]
        except UserError as exc:
            raise APIError(400, str(exc), param="prompt") from None

    def admit(self, count: int) -> None:
        if self.in_flight + count > self.limits.max_concurrent:
            raise APIError(
                429,
                f"Too many requests in flight (limit {self.limits.max_concurrent}); retry shortly.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )


def create_app(server: Server) -> FastAPI:
    """The FastAPI application; the engine thread starts and stops with the app."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.engine.start()
        yield
        server.engine.stop()

    app = FastAPI(title="llamafoundry", lifespan=lifespan)
    app.add_middleware(_Gate, server=server)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(400, "The request body is not valid JSON.", code="invalid_json")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        return _error(400, f"Invalid request: {where or 'body'}: {message}.", param=where or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Our bug: the client still gets OpenAI's error shape; the traceback goes to the log.
        return _error(500, "The server had an error while processing your request.", type="server_error")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": server.model_name, "in_flight": server.in_flight}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(server)]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict:
        if name != server.model_name:
            raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")
        return _model_card(server)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompts = await run_in_threadpool(server.encode_prompts, body.prompt)
        params = [server.sampling(body, len(p)) for p in prompts]
        return await _respond(server, request, prompts, params, body.stream, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        messages = [m.model_dump() for m in body.messages]
        try:
            prompt = await run_in_threadpool(
                render_chat, messages, server.chat_template, server.generator.tokenizer
            )
        except UserError as exc:
            raise APIError(400, str(exc), param="messages") from None
        params = server.sampling(body, len(prompt), server.chat_template.stop)
        return await _respond(server, request, [prompt], [params], body.stream, chat=True)

    return app


class _Gate:
    """ASGI middleware that runs before anything reads a body: checks the API key on /v1/ routes, then
    reads the body up to the size limit (413 beyond it) and hands it on."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if scope["path"].startswith("/v1/"):
                self.server.check_key(headers)
            body = await _read_body(receive, headers, self.server.max_request_bytes)
        except APIError as exc:
            await exc.response()(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, headers: Headers, limit: int) -> bytes | None:
    """The request's body (None if the client left first), refused with 413 as soon as it is known to
    exceed `limit` bytes."""
    too_large = APIError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes (--max-request-bytes).",
        code="request_too_large",
    )
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise too_large
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then what the client sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _model_card(server: Server) -> dict:
    return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "llamafoundry"}


async def _respond(
    server: Server,
    http: Request,
    prompts: list[list[int]],
    params: list[SamplingParams],
    stream: bool,
    chat: bool,
) -> Any:
    server.admit(len(prompts))
    server.in_flight += len(prompts)
    requests = [server.engine.submit(p, s) for p, s in zip(prompts, params, strict=True)]
    meta = {
        "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
        "created": int(time.time()),
        "model": server.model_name,
    }
    if stream:
        return StreamingResponse(_stream(server, http, requests, meta, chat), media_type="text/event-stream")
    try:
        results = [await _collect(server, r) for r in requests]
    finally:
        _release(server, requests)
    choices = []
    for index, (text, reason, _) in enumerate(results):
        if chat:
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                    "logprobs": None,
                }
            )
        else:
            choices.append({"index": index, "text": text, "finish_reason": reason, "logprobs": None})
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(count for _, _, count in results)
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _release(server: Server, requests: list) -> None:
    for request in requests:
        request.cancelled = True  # no-op for finished requests; stops the hand-off for abandoned ones
    server.in_flight -= len(requests)


async def _events(request: Any) -> AsyncIterator[StepEvent]:
    while True:
        item = await request.events.get()
        if item is None:
            return
        if isinstance(item, Exception):
            raise APIError(500, f"generation failed: {item}", type="server_error")
        yield item


async def _chunks(server: Server, request: Any) -> AsyncIterator[tuple[str, str | None, int]]:
    """(text, finish_reason, tokens) pieces of a request's completion. Under moderation, text is held
    until the completion so far has been scored (every `window` characters, and at the end); a
    completion that scores at the threshold ends there with "content_filter", its held text dropped."""
    moderation = server.moderation
    if moderation is None:
        async for event in _events(request):
            yield event.text, event.finish_reason, 1
        return
    released, held, tokens = "", "", 0
    async for event in _events(request):
        held += event.text
        tokens += 1
        if event.finish_reason is None and len(held) < moderation.window:
            continue
        if await run_in_threadpool(moderation.blocks, released + held):
            request.cancelled = True  # stop decoding what will never be returned
            yield "", "content_filter", tokens
            return
        yield held, event.finish_reason, tokens
        released, held, tokens = released + held, "", 0


async def _collect(server: Server, request: Any) -> tuple[str, str | None, int]:
    """(text, finish_reason, generated tokens) of a finished request."""
    parts, reason, count = [], None, 0
    async for text, finish, tokens in _chunks(server, request):
        parts.append(text)
        count += tokens
        reason = finish or reason
    return "".join(parts), reason, count


async def _stream(
    server: Server, http: Request, requests: list, meta: dict, chat: bool
) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    try:
        for index, request in enumerate(requests):
            if chat:
                yield _sse(
                    {
                        **meta,
                        "object": kind,
                        "choices": [
                            {
                                "index": index,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            async for text, finish, _ in _chunks(server, request):
                if await http.is_disconnected():
                    return
                if text or finish:
                    choice = (
                        {"index": index, "delta": {"content": text} if text else {}, "finish_reason": finish}
                        if chat
                        else {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
                    )
                    yield _sse({**meta, "object": kind, "choices": [choice]})
        yield "data: [DONE]\n\n"
    except APIError as exc:
        yield _sse({"error": {"message": exc.message, "type": exc.type, "param": None, "code": None}})
    finally:
        _release(server, requests)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
