"""Chat messages to a prompt: the model's own template when its folder has one, else a plain one.

LLaMA is a base model (the paper trains no chat variant), so the default template writes the dialogue
as a transcript, "User: ...\\nAssistant: ...", ends with "Assistant:" and stops where the model starts
the next "User:" turn. A Hugging Face folder's `tokenizer_config.json` (or `chat_template.jinja`) may
carry a Jinja `chat_template`; it is rendered in Jinja's sandbox, as transformers does, and its special
tokens (Llama 3's headers and end of turn) are encoded as their ids by every kind of tokenizer.

Finetuning (Sec. 4) renders its examples with `render_reply`: the prompt is `render_chat`'s, token for
token, so a finetuned model sees at serving time exactly what it was trained on.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.tokenizer.load import read_chat_template

ROLES = ("system", "user", "assistant")
_SPEAKER = {"user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja template (None: the plain transcript) and the stop strings that end the model's turn."""

    jinja: str | None = None
    stop: tuple[str, ...] = ("\nUser:",)


def load_chat_template(model_path: str | os.PathLike) -> ChatTemplate:
    """The model folder's template (chat_template.jinja, else tokenizer_config.json's) if it has one,
    else the plain one."""
    template = read_chat_template(Path(model_path))
    return ChatTemplate() if template is None else ChatTemplate(jinja=template, stop=())


def end_of_turn(template: ChatTemplate, tokenizer: Tokenizer) -> tuple[int, ...]:
    """The special token a Jinja template writes right after the assistant's message (Llama 3's
    <|eot_id|>, Llama 2's </s>), which ends the model's turn; () when it writes none there."""
    if template.jinja is None:
        return ()
    mark = "\x00reply\x00"  # text no template writes of its own
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}]
    text = _render_jinja(template.jinja, messages, tokenizer, add_generation_prompt=False)
    after = text.partition(mark)[2].lstrip()
    hits = [piece for piece in tokenizer.special_tokens if after.startswith(piece)]
    return (tokenizer.special_tokens[max(hits, key=len)],) if hits else ()


def render_chat(messages: Sequence[dict], template: ChatTemplate, tokenizer: Tokenizer) -> list[int]:
    """Token ids of the prompt that asks the model for the assistant's next message."""
    for message in messages:
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise UserError(
                f"each message needs a role ({', '.join(ROLES)}) and text content, got {message!r}"
            )
    if not messages:
        raise UserError("messages is empty; give at least one message")
    if template.jinja is None:
        return tokenizer.encode(_transcript(messages), bos=True)
    return _encode_with_specials(_render_jinja(template.jinja, messages, tokenizer), tokenizer)


def render_reply(
    history: Sequence[dict], reply: str, template: ChatTemplate, tokenizer: Tokenizer
) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) of a training example: the prompt `render_chat` gives after `history`,
    then `reply` as the template writes the assistant's turn, ending with EOS or the template's own
    end-of-turn token (Llama 3's <|eot_id|>, where generation stops too): the model learns to stop.

    A Jinja template renders the conversation with the reply (no generation prompt); that text must
    begin with the prompt's text, and its tokens with the prompt's tokens, or the template is refused.
    """
    prompt = render_chat(history, template, tokenizer)
    if template.jinja is None:  # the transcript: " reply" after "Assistant:", SentencePiece's dummy prefix
        ids = tokenizer.encode(reply.strip(), bos=False)
    else:
        ids = _jinja_reply(template.jinja, history, reply, prompt, tokenizer)
    ends = {tokenizer.eos_id, *end_of_turn(template, tokenizer)}
    return prompt, ids if ids and ids[-1] in ends else ids + [tokenizer.eos_id]


def _jinja_reply(
    source: str, history: Sequence[dict], reply: str, prompt: list[int], tokenizer: Tokenizer
) -> list[int]:
    before = _render_jinja(source, history, tokenizer)
    messages = [*history, {"role": "assistant", "content": reply}]
    after = _render_jinja(source, messages, tokenizer, add_generation_prompt=False)
    ids = _encode_with_specials(after, tokenizer)
    if not after.startswith(before) or ids[: len(prompt)] != prompt:
        raise UserError(
            "the chat template writes a conversation with its reply differently from the prompt it gives "
            "without it, so training and serving would disagree; fix the template"
        )
    return ids[len(prompt) :]


def _transcript(messages: Sequence[dict]) -> str:
    lines = []
    for message in messages:
        if message["role"] == "system":
            lines.append(message["content"].strip() + "\n")
        else:
            lines.append(f"{_SPEAKER[message['role']]}: {message['content'].strip()}")
    return "\n".join(lines) + "\nAssistant:"


def _render_jinja(
    source: str, messages: Sequence[dict], tokenizer: Tokenizer, add_generation_prompt: bool = True
) -> str:
    from jinja2 import TemplateError

    try:
        return _compiled(source).render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=tokenizer.id_to_piece(tokenizer.bos_id),
            eos_token=tokenizer.id_to_piece(tokenizer.eos_id),
        )
    except TemplateError as exc:
        raise UserError(
            f"the model's chat template failed to render ({exc}); fix tokenizer_config.json"
        ) from None


@functools.lru_cache(maxsize=8)
def _compiled(source: str):
    """The template compiled once: compiling costs milliseconds, and a finetune renders thousands of
    examples with one template. A syntax error raises jinja2's TemplateSyntaxError (not cached)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def _raise_exception(message: str) -> None:
    raise UserError(f"the chat template refused the messages: {message}")


def _encode_with_specials(text: str, tokenizer: Tokenizer) -> list[int]:
    """Encode rendered text in which the tokenizer's special tokens (BOS / EOS, Llama 3's headers and
    end of turn) stand for their ids: SentencePiece would otherwise spell them out as characters."""
    specials = tokenizer.special_tokens
    ids: list[int] = []
    for i, part in enumerate(_special_pattern(tuple(specials)).split(text)):
        if i % 2:
            ids.append(specials[part])
        elif part:
            ids += tokenizer.encode(part, bos=False)
    if not ids or ids[0] != tokenizer.bos_id:
        ids.insert(0, tokenizer.bos_id)
    return ids


@functools.lru_cache(maxsize=8)
def _special_pattern(pieces: tuple[str, ...]) -> re.Pattern:
    """A regex whose one group matches any of `pieces`, the longest first where one begins another."""
    return re.compile("(" + "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True)) + ")")
