"""Instruction data (Sec. 4, LLaMA-I): files of examples read as conversations.

Three formats, as JSON (a list of records) or JSONL (one record a line), gzipped or not:
- Alpaca: `instruction`, optional `input`, `output`; the user's message is the instruction, then a blank
  line and the input when there is one. Self-instruct's seed tasks (`instruction` with `instances`, a
  list of `input`/`output`) give one conversation per instance.
- chat: `messages`, a list of `{"role": "system" | "user" | "assistant", "content": text}`.
- prompt/completion: `prompt` and `completion`, a one-turn conversation.

Every format becomes a list of messages, so one chat template (the one serving uses) writes them all.
A malformed file is a UserError naming the file and the record; nothing is read from it.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.inference.chat import ROLES

FORMATS = ("auto", "alpaca", "chat", "prompt_completion")


@dataclass(frozen=True)
class Conversation:
    """The messages of one example ({"role": ..., "content": ...}) and where they were read ("FILE line N")."""

    messages: list[dict]
    source: str


def read_conversations(paths: list[str | os.PathLike], fmt: str = "auto") -> list[Conversation]:
    """The conversations of every file, in order; `fmt` one of FORMATS ("auto": each file's own, from
    its first record)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown instruction format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not paths:
        raise UserError("no instruction files given; pass --data FILE")
    conversations: list[Conversation] = []
    for path in map(Path, paths):
        conversations += _read_file(path, fmt)
    return conversations


def _read_file(path: Path, fmt: str) -> list[Conversation]:
    records = _records(path)
    if not records:
        raise UserError(f"{path} holds no examples; give a file of instruction records")
    if fmt == "auto":
        fmt = _detect(path, *records[0])
    convert = {"alpaca": _alpaca, "chat": _chat, "prompt_completion": _prompt_completion}[fmt]
    conversations = []
    for where, record in records:
        if not isinstance(record, dict):
            raise UserError(f"{path} {where}: expected a JSON object, got {type(record).__name__}")
        try:
            conversations += [Conversation(messages, f"{path} {where}") for messages in convert(record)]
        except _Bad as exc:
            raise UserError(f"{path} {where}: {exc} (a {fmt} record); fix the file") from None
    return conversations


def _records(path: Path) -> list[tuple[str, object]]:
    """(where, record) pairs: a JSON list's items ("record N") or a JSONL file's lines ("line N")."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); fix the file") from None
        return [(f"record {i}", item) for i, item in enumerate(items, start=1)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number} is not valid JSON ({exc}); fix the file") from None
    return records


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # gzip's magic, whatever the name says
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise UserError(f"instruction file {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give instruction files (JSON or JSONL)") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path} cannot be read ({exc}); check the file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); fix its encoding"
        ) from None


def _detect(path: Path, where: str, record: object) -> str:
    if isinstance(record, dict):
        if "messages" in record:
            return "chat"
        if "prompt" in record and "completion" in record:
            return "prompt_completion"
        if "instruction" in record:
            return "alpaca"
    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
    raise UserError(
        f"{path} {where}: not an instruction record ({keys}); expected instruction/input/output, "
        "messages, or prompt/completion"
    )


class _Bad(Exception):
    """What is wrong with one record (the caller names the file and the record)."""


def _text(record: dict, key: str, required: bool = True) -> str:
    if key not in record:
        if required:
            raise _Bad(f"missing field {key!r}")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise _Bad(f"field {key!r} must be text, got {type(value).__name__}")
    return value


def _alpaca(record: dict) -> list[list[dict]]:
    instruction = _text(record, "instruction")
    if not instruction.strip():
        raise _Bad("field 'instruction' is empty")
    if "instances" in record and "output" not in record:  # self-instruct's seed tasks
        instances = record["instances"]
        if not isinstance(instances, list) or not instances:
            raise _Bad("field 'instances' must be a non-empty list of input/output objects")
        if not all(isinstance(i, dict) for i in instances):
            raise _Bad("field 'instances' must hold input/output objects")
        pairs = [(_text(i, "input", required=False), _text(i, "output")) for i in instances]
    else:
        pairs = [(_text(record, "input", required=False), _text(record, "output"))]
    return [
        _one_turn(instruction + (f"\n\n{given}" if given.strip() else ""), output) for given, output in pairs
    ]


def _prompt_completion(record: dict) -> list[list[dict]]:
    return [_one_turn(_text(record, "prompt"), _text(record, "completion"))]


def _chat(record: dict) -> list[list[dict]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad("field 'messages' must be a non-empty list")
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _Bad(f"message {i} needs a role ({', '.join(ROLES)})")
        if not isinstance(message.get("content"), str):
            raise _Bad(f"message {i} needs text content")
    if not any(m["role"] == "assistant" for m in messages[1:]):
        raise _Bad("no assistant message after the first message to learn from")
    return [[{"role": m["role"], "content": m["content"]} for m in messages]]


def _one_turn(prompt: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
