"""An OpenAI-compatible HTTP API (FastAPI + uvicorn): completions, chat completions, models, health.

The official `openai` client works against it unchanged: the same routes, request fields, response
objects, server-sent-event streams ending in `data: [DONE]`, and errors as
`{"error": {"message", "type", "param", "code"}}` with the status codes OpenAI uses (400 bad request,
401 bad API key, 404 unknown model, 413 body too large, 429 too many requests in flight). Limits protect
the one model: prompt + max_tokens must fit the context, max_tokens has a ceiling, and at most
`max_concurrent` choices (prompts x n) may be in flight. Decoding happens on the `BatchingEngine`'s thread.

OpenAI's parameters either work as OpenAI documents them (n, logprobs/top_logprobs, echo, logit_bias,
max_completion_tokens, stream_options, prompts as token ids, text content parts) or get OpenAI's 400
naming them (tools, response_format, suffix, ... : `NOT_IMPLEMENTED`); a field OpenAI does not have is
refused as OpenAI refuses it, so that nothing a client sends is silently ignored.

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
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llamafoundry.errors import UserError
from llamafoundry.inference.chat import ChatTemplate, render_chat
from llamafoundry.inference.engine import BatchingEngine
from llamafoundry.inference.engine import Request as EngineRequest
from llamafoundry.inference.generate import Generator, StepEvent, TokenLogprob
from llamafoundry.inference.openai_api import (
    MAX_STOP,
    APIError,
    ChatRequest,
    CompletionRequest,
    LogprobWriter,
    SamplingFields,
    error_response,
    logprobs_asked,
    message_text,
    prompt_list,
)
from llamafoundry.inference.sampling import SamplingParams, request_seed


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

    def sampling(
        self, body: SamplingFields, prompt_len: int, extra_stop: tuple[str, ...] = ()
    ) -> SamplingParams:
        """The sampling settings of one prompt of a request, every field checked against the server."""
        if body.model != self.model_name:
            raise APIError(
                404,
                f"The model `{body.model}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )
        refused = body.refused()
        if refused is not None:
            raise refused
        name, asked = "max_tokens", body.max_tokens
        if getattr(body, "max_completion_tokens", None) is not None:
            name, asked = "max_completion_tokens", body.max_completion_tokens
        echo = getattr(body, "echo", False)
        if asked == 0 and not echo:  # nothing to return: OpenAI allows 0 only to echo the prompt
            raise APIError(400, f"{name} must be at least 1 (0 only with echo).", param=name)
        context = self.generator.max_seq_len
        room = context - prompt_len
        max_tokens = min(room, self.limits.max_tokens) if asked is None else asked
        if max_tokens > self.limits.max_tokens:
            raise APIError(
                400,
                f"{name} is {max_tokens} but this server allows at most {self.limits.max_tokens}.",
                param=name,
            )
        if room < 1 or max_tokens > room:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_len + max(max_tokens, 1)} tokens ({prompt_len} in the prompt, "
                f"{max(max_tokens, 1)} for the completion). Shorten the prompt or lower {name}.",
                param=name if room >= 1 else "prompt",
                code="context_length_exceeded",
            )
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP:
            raise APIError(400, f"stop has {len(stops)} sequences; give at most {MAX_STOP}.", param="stop")
        vocab = self.generator.model.cfg.vocab_size
        bias = tuple((body.logit_bias or {}).items())
        if any(token >= vocab for token, _ in bias):
            raise APIError(
                400,
                f"logit_bias names a token id beyond this model's vocabulary of {vocab}.",
                param="logit_bias",
            )
        logprobs = logprobs_asked(body)
        try:
            return SamplingParams(
                max_new_tokens=max(
                    max_tokens, 1
                ),  # 0: the prompt is scored in the prefill; one token is dropped
                temperature=body.temperature,
                top_k=body.top_k,
                top_p=body.top_p,
                repetition_penalty=body.repetition_penalty,
                ignore_eos=body.ignore_eos,
                stop=tuple(stops) + extra_stop,
                seed=body.seed,
                logit_bias=bias,
                logprobs=logprobs,
                prompt_logprobs=logprobs if echo else None,
            )
        except UserError as exc:
            raise APIError(400, str(exc)) from None

    def encode_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Each prompt of a completions request as token ids (text, token ids, or a list of either)."""
        prompts = prompt_list(prompt)
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

    def prompt_text(self, prompt: str | list[int]) -> str:
        """A prompt as echo returns it: its text as sent, or its token ids decoded."""
        return prompt if isinstance(prompt, str) else self.generator.tokenizer.decode(prompt)

    def check_choices(self, prompts: int, n: int) -> None:
        """A 400 for a request whose choices (prompts x n) could never all be in flight at once."""
        if prompts * n > self.limits.max_concurrent:
            raise APIError(
                400,
                f"{prompts} prompt(s) x n={n} is {prompts * n} choices; this server takes at most "
                f"{self.limits.max_concurrent} in one request.",
                param="n",
            )

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
    async def apierror_response(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "extra_forbidden":  # OpenAI's words for a field it does not know
            return error_response(400, f"Unrecognized request argument supplied: {where}", param=where)
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        return error_response(400, f"Invalid request: {where or 'body'}: {message}.", param=where or None)

    @app.exception_handler(HTTPException)
    async def httperror_response(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
        )

    @app.exception_handler(Exception)
    async def servererror_response(request: Request, exc: Exception) -> JSONResponse:
        # Our bug: the client still gets OpenAI's error shape; the traceback goes to the log.
        return error_response(
            500, "The server had an error while processing your request.", type="server_error"
        )

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
        server.check_choices(len(prompts), body.n)
        params = [server.sampling(body, len(p)) for p in prompts]
        echoes = [server.prompt_text(p) for p in prompt_list(body.prompt)] if body.echo else None
        return await _respond(server, request, body, prompts, params, echoes, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        messages = [{"role": m.role, "content": message_text(m, i)} for i, m in enumerate(body.messages)]
        try:
            prompt = await run_in_threadpool(
                render_chat, messages, server.chat_template, server.generator.tokenizer
            )
        except UserError as exc:
            raise APIError(400, str(exc), param="messages") from None
        server.check_choices(1, body.n)
        params = server.sampling(body, len(prompt), server.chat_template.stop)
        return await _respond(server, request, body, [prompt], [params], None, chat=True)

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


@dataclass
class _Choice:
    """One choice of a reply: the engine request decoding it, and what the reply puts around its text."""

    request: EngineRequest
    prompt: list[int]
    echo: str | None = None  # completions' echo: the prompt's text, returned before the completion
    drop: bool = False  # max_tokens 0: the one token decoded (the prefill scores the prompt) is not returned

    @property
    def logprobs(self) -> bool:
        return self.request.params.logprobs is not None

    def writer(self, tokenizer: Any) -> LogprobWriter:
        return LogprobWriter(tokenizer, None if self.echo is not None else self.prompt[-1])


@dataclass
class _Piece:
    """A part of a choice's completion as the client gets it."""

    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0  # generated tokens it covers (for usage)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # theirs, when asked for
    prompt: tuple[TokenLogprob, ...] = ()  # the prompt tokens' (the first piece, when echo asks)

    def add(self, event: StepEvent) -> None:
        self.text += event.text
        self.finish_reason = event.finish_reason
        self.tokens += 1
        self.logprobs += [event.logprobs] if event.logprobs is not None else []


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sample(params: SamplingParams, sample: int) -> SamplingParams:
    """The settings of sample `sample` of a prompt (n > 1): a seeded request's samples draw seeds of their
    own from its seed, the first the seed itself (so n=1 decodes as before)."""
    if sample == 0 or params.seed is None:
        return params
    return params.replace(seed=request_seed(params.seed, sample))


async def _respond(
    server: Server,
    http: Request,
    body: SamplingFields,
    prompts: list[list[int]],
    params: list[SamplingParams],
    echoes: list[str] | None,
    chat: bool,
) -> Any:
    server.admit(len(prompts) * body.n)
    server.in_flight += len(prompts) * body.n
    # All n samples of all prompts are queued at once, so the engine decodes them in one batch.
    choices = [
        _Choice(server.engine.submit(prompt, _sample(p, j)), prompt, echo, drop=body.max_tokens == 0)
        for prompt, p, echo in zip(prompts, params, echoes or [None] * len(prompts), strict=True)
        for j in range(body.n)
    ]
    meta = {
        "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
        "created": int(time.time()),
        "model": server.model_name,
    }
    prompt_tokens = sum(len(p) for p in prompts)  # once per prompt, whatever n is (as OpenAI counts)
    if body.stream:
        return StreamingResponse(
            _stream(server, http, choices, meta, chat, prompt_tokens if body.include_usage else None),
            media_type="text/event-stream",
        )
    try:
        results = [await _collect(server, c) for c in choices]
    finally:
        _release(server, choices)
    tokenizer = server.generator.tokenizer
    bodies = []
    for index, (choice, piece) in enumerate(zip(choices, results, strict=True)):
        if chat:
            logprobs = choice.writer(tokenizer).chat(piece.logprobs) if choice.logprobs else None
            message = {"role": "assistant", "content": piece.text}
            bodies.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": piece.finish_reason,
                    "logprobs": logprobs,
                }
            )
        else:
            tokens = [*piece.prompt, *piece.logprobs]
            logprobs = choice.writer(tokenizer).completion(tokens) if choice.logprobs else None
            text = (choice.echo or "") + piece.text
            bodies.append(
                {"index": index, "text": text, "finish_reason": piece.finish_reason, "logprobs": logprobs}
            )
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": bodies,
        "usage": _usage(prompt_tokens, sum(piece.tokens for piece in results)),
    }


def _release(server: Server, choices: list[_Choice]) -> None:
    for choice in choices:
        choice.request.cancelled = True  # no-op for finished requests; stops the hand-off for abandoned ones
    server.in_flight -= len(choices)


async def _events(request: EngineRequest) -> AsyncIterator[StepEvent]:
    while True:
        item = await request.events.get()
        if item is None:
            return
        if isinstance(item, Exception):
            raise APIError(500, f"generation failed: {item}", type="server_error")
        yield item


async def _chunks(server: Server, choice: _Choice) -> AsyncIterator[_Piece]:
    """The pieces of a choice's completion. Under moderation, text is held until the completion so far
    has been scored (every `window` characters, and at the end); a completion that scores at the
    threshold ends there with "content_filter", its held text dropped."""
    moderation, request = server.moderation, choice.request
    released, held = "", _Piece()
    async for event in _events(request):
        if event.prompt_logprobs:
            yield _Piece(prompt=event.prompt_logprobs)
        if choice.drop:  # max_tokens 0: its token is not returned (nor scored, nor counted)
            continue
        held.add(event)
        if moderation is not None:
            if event.finish_reason is None and len(held.text) < moderation.window:
                continue
            if await run_in_threadpool(moderation.blocks, released + held.text):
                request.cancelled = True  # stop decoding what will never be returned
                yield _Piece("", "content_filter", held.tokens)
                return
        yield held
        released, held = released + held.text, _Piece()
    if choice.drop:
        yield _Piece("", "length")


async def _collect(server: Server, choice: _Choice) -> _Piece:
    """A finished choice's completion, as one piece."""
    whole = _Piece()
    async for piece in _chunks(server, choice):
        whole.text += piece.text
        whole.finish_reason = piece.finish_reason or whole.finish_reason
        whole.tokens += piece.tokens
        whole.logprobs += piece.logprobs
        whole.prompt += piece.prompt
    return whole


async def _stream(
    server: Server,
    http: Request,
    choices: list[_Choice],
    meta: dict,
    chat: bool,
    usage_of: int | None,
) -> AsyncIterator[str]:
    """The reply's server-sent events. With `usage_of` (the prompt tokens; stream_options.include_usage)
    every chunk has "usage": null and a last chunk with no choices has the usage, as OpenAI sends it."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    usage = {} if usage_of is None else {"usage": None}
    tokenizer = server.generator.tokenizer
    generated = 0
    try:
        for index, choice in enumerate(choices):
            writer, echo = choice.writer(tokenizer), choice.echo or ""
            if chat:
                delta = {"role": "assistant", "content": ""}
                first = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                yield _sse({**meta, "object": kind, "choices": [first], **usage})
            async for piece in _chunks(server, choice):
                if await http.is_disconnected():
                    return
                generated += piece.tokens
                text, tokens = echo + piece.text, [*piece.prompt, *piece.logprobs]
                echo = ""  # the prompt goes before the first piece
                if not (text or piece.finish_reason or (tokens and choice.logprobs)):
                    continue
                if chat:
                    logprobs = writer.chat(tokens) if choice.logprobs else None
                    delta = {"content": text} if text else {}
                    out = {
                        "index": index,
                        "delta": delta,
                        "logprobs": logprobs,
                        "finish_reason": piece.finish_reason,
                    }
                else:
                    logprobs = writer.completion(tokens) if choice.logprobs else None
                    out = {
                        "index": index,
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": piece.finish_reason,
                    }
                yield _sse({**meta, "object": kind, "choices": [out], **usage})
        if usage_of is not None:
            yield _sse({**meta, "object": kind, "choices": [], "usage": _usage(usage_of, generated)})
        yield "data: [DONE]\n\n"
    except APIError as exc:
        yield _sse({"error": {"message": exc.message, "type": exc.type, "param": None, "code": None}})
    finally:
        _release(server, choices)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
