"""OpenAI's API shapes for the server: request bodies (each field's range, and what this server refuses
rather than ignores), errors as `{"error": {"message", "type", "param", "code"}}`, and logprobs objects."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llamafoundry.inference.generate import TokenLogprob
from llamafoundry.inference.sampling import BIAS_RANGE, PENALTY_RANGE, SEED_RANGE

MAX_STOP = 4  # stop sequences per request, as OpenAI allows


class APIError(Exception):
    """An error the client gets as OpenAI's JSON error, with OpenAI's status code."""

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
        return error_response(self.status, self.message, self.type, self.param, self.code)


def error_response(
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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


TokenId = Annotated[int, Field(ge=0)]
Bias = Annotated[float, Field(ge=BIAS_RANGE[0], le=BIAS_RANGE[1], allow_inf_nan=False)]


class SamplingFields(BaseModel):
    """Fields shared by both endpoints (OpenAI's names, defaults and ranges, plus vLLM's top_k,
    repetition_penalty and ignore_eos), each bounded to what the sampler takes. A field OpenAI does not
    have is refused (as OpenAI refuses it); OpenAI's fields this server does not implement are in
    `NOT_IMPLEMENTED`."""

    model_config = ConfigDict(extra="allow")  # the extras are checked by `refused`, which names them
    # OpenAI's parameters that change nothing about the output (end-user ids, for abuse monitoring).
    NO_EFFECT: ClassVar[frozenset[str]] = frozenset({"user", "safety_identifier"})
    # OpenAI's parameters not implemented here, with the values that ask for nothing (accepted).
    NOT_IMPLEMENTED: ClassVar[dict[str, tuple]] = {}
    model: str
    max_tokens: int | None = Field(None, ge=1)  # its ceiling is the server's (see Server.sampling)
    temperature: float = _finite(1.0, ge=0, le=2)
    top_p: float = _finite(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=2**31 - 1)  # beyond the vocabulary it keeps every token
    repetition_penalty: float = _finite(1.0, ge=PENALTY_RANGE[0], le=PENALTY_RANGE[1])
    ignore_eos: bool = False  # vLLM's extension, as top_k and repetition_penalty are
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=128)  # OpenAI's ceiling; the server's max_concurrent bounds it too
    logit_bias: dict[TokenId, Bias] | None = None
    presence_penalty: float = _finite(0.0, ge=-2, le=2)
    frequency_penalty: float = _finite(0.0, ge=-2, le=2)

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

    def refused(self) -> APIError | None:
        """OpenAI's 400 for the first field this server does not take (or not at this value)."""
        for name, value in (self.model_extra or {}).items():
            if name in self.NO_EFFECT:
                continue
            if name not in self.NOT_IMPLEMENTED:
                return APIError(400, f"Unrecognized request argument supplied: {name}", param=name)
            if value not in self.NOT_IMPLEMENTED[name]:
                return _not_supported(name)
        for name, default in (("presence_penalty", 0), ("frequency_penalty", 0)):
            if getattr(self, name) != default:
                return _not_supported(name)
        if self.stream_options is not None and not self.stream:
            return APIError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        return None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _not_supported(name: str) -> APIError:
    return APIError(400, f"`{name}` is not supported by this server; leave it at its default.", param=name)


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


class CompletionRequest(SamplingFields):
    NOT_IMPLEMENTED: ClassVar[dict[str, tuple]] = {"suffix": (None, ""), "best_of": (None, 1)}
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)  # OpenAI's default; 0 only with echo (scoring the prompt)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5, strict=True)  # alternatives per token, OpenAI's range


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str | list[dict[str, Any]]


class ChatRequest(SamplingFields):
    NO_EFFECT: ClassVar[frozenset[str]] = SamplingFields.NO_EFFECT | {"metadata", "prompt_cache_key"}
    NOT_IMPLEMENTED: ClassVar[dict[str, tuple]] = {
        "response_format": (None, {"type": "text"}),
        "tools": (None, []),
        "tool_choice": (None, "none"),
        "parallel_tool_calls": (None,),
        "functions": (None, []),
        "function_call": (None, "none"),
        "audio": (None,),
        "modalities": (None, ["text"]),
        "prediction": (None,),
        "reasoning_effort": (None,),
        "verbosity": (None,),
        "web_search_options": (None,),
        "store": (None, False),  # no stored completions here
        "service_tier": (None, "auto", "default"),
    }
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=1)  # what chat clients send now, for max_tokens
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20, strict=True)

    def refused(self) -> APIError | None:
        if self.top_logprobs is not None and not self.logprobs:
            return APIError(400, "top_logprobs needs logprobs to be true.", param="top_logprobs")
        return super().refused()


def message_text(message: ChatMessage, index: int) -> str:
    """A message's text: its content, or its text parts joined with newlines (as vLLM joins them)."""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                f"messages[{index}].content has a part of type {kind!r}; this server takes text parts "
                f'only ({{"type": "text", "text": ...}}).',
                param=f"messages.[{index}].content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def prompt_list(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A completions `prompt` as a list of prompts (a text or a list of token ids is one prompt)."""
    if isinstance(prompt, str) or (prompt and all(isinstance(p, int) for p in prompt)):
        return [prompt]
    return list(prompt)


def logprobs_asked(body: SamplingFields) -> int | None:
    """How many alternatives per token a request asks log-probabilities of (None: no logprobs)."""
    if isinstance(body, ChatRequest):
        return (body.top_logprobs or 0) if body.logprobs else None
    return body.logprobs


class LogprobWriter:
    """OpenAI's logprobs objects for one choice's tokens, written in order. Each token's text is decoded
    after the token before it (SentencePiece gives a piece its leading space only after another piece);
    text_offset counts on through the choice's text. A byte token of an unfinished UTF-8 character
    decodes to U+FFFD, and its `bytes` are that character's."""

    def __init__(self, tokenizer: Any, previous: int | None) -> None:
        self.tokenizer, self.previous, self.offset = tokenizer, previous, 0

    def _texts(self, ids: list[int]) -> list[str]:
        if self.previous is None:
            return [self.tokenizer.decode([token]) for token in ids]
        before = len(self.tokenizer.decode([self.previous]))
        return [self.tokenizer.decode([self.previous, token])[before:] for token in ids]

    def completion(self, tokens: list[TokenLogprob]) -> dict:
        """Completions' shape; each token's alternatives include the token itself, as OpenAI documents."""
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for entry in tokens:
            text, *alternatives = self._texts([entry.token, *(token for token, _ in entry.top)])
            top: dict[str, float] | None = None
            if entry.logprob is not None:
                top = {}
                for alternative, (_, logprob) in zip(alternatives, entry.top, strict=True):
                    top.setdefault(alternative, logprob)  # two tokens of one text: the likelier one's
                top.setdefault(text, entry.logprob)
            out["tokens"].append(text)
            out["token_logprobs"].append(entry.logprob)
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
            self.previous = entry.token
        return out

    def chat(self, tokens: list[TokenLogprob]) -> dict:
        """Chat's shape: {"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal"}."""
        content = []
        for entry in tokens:
            text, *alternatives = self._texts([entry.token, *(token for token, _ in entry.top)])
            tops = [
                _chat_token(alt, logprob) for alt, (_, logprob) in zip(alternatives, entry.top, strict=True)
            ]
            content.append({**_chat_token(text, entry.logprob), "top_logprobs": tops})
            self.previous = entry.token
        return {"content": content, "refusal": None}


def _chat_token(text: str, logprob: float | None) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
