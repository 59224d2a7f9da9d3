"""`load_tokenizer`: the tokenizer of a file or a model folder, whichever of the three kinds it is."""

from __future__ import annotations

import os
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.tokenizer.base import Tokenizer
from llamafoundry.tokenizer.bytelevel import read_ranks
from llamafoundry.tokenizer.json_bpe import JsonTokenizer
from llamafoundry.tokenizer.sentencepiece_model import SentencePieceTokenizer

MODEL, JSON = "tokenizer.model", "tokenizer.json"
_BASE64 = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer at `path`: a SentencePiece or tiktoken `tokenizer.model`, a `tokenizer.json`, or
    a folder holding one (a SentencePiece model first: it is the exact one where an HF folder has both)."""
    path = Path(path)
    if path.is_dir():
        found = find_tokenizer(path)
        if found is None:
            raise UserError(f"{path} holds no {MODEL} or {JSON}; pass the tokenizer file")
        return found
    if not path.is_file():
        raise UserError(f"tokenizer file {path} not found; pass a tokenizer.model or tokenizer.json")
    if path.suffix == ".json":
        return _json_tokenizer(path)
    return _model_file(path)


def find_tokenizer(folder: Path) -> Tokenizer | None:
    """The folder's tokenizer with the folder's chat template, or None when it has no tokenizer file."""
    model = folder / MODEL
    if model.is_file() and not _is_tiktoken(model):
        tokenizer: Tokenizer = SentencePieceTokenizer(model)
    elif (folder / JSON).is_file():
        tokenizer = _json_tokenizer(folder / JSON)
    elif model.is_file():
        tokenizer = _model_file(model)
    else:
        return None
    tokenizer.chat_template = read_chat_template(folder)
    return tokenizer


def read_chat_template(folder: Path) -> str | None:
    """The folder's Jinja chat template: chat_template.jinja (newer transformers), else
    tokenizer_config.json's `chat_template` (a string, or named templates of which "default" is used)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            template = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{jinja} is not readable text ({exc}); fix the file") from None
    else:
        template = _json_object(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def _model_file(path: Path) -> Tokenizer:
    if not _is_tiktoken(path):
        return SentencePieceTokenizer(path)
    from llamafoundry.tokenizer.tiktoken_model import TiktokenTokenizer  # tiktoken only for its files

    return TiktokenTokenizer(read_ranks(path.read_bytes(), str(path)), path.name, path)


def _is_tiktoken(path: Path) -> bool:
    """Whether the file opens as tiktoken's text lines ("base64-token rank"), not a SentencePiece proto."""
    with open(path, "rb") as f:
        head = f.read(64).split(b"\n", 1)[0].split(b" ")
    return len(head) == 2 and head[1].isdigit() and bool(head[0]) and set(head[0]) <= _BASE64


def _json_tokenizer(path: Path) -> JsonTokenizer:
    """A tokenizer.json with its folder's tokenizer_config.json (BOS, EOS) and generation_config.json
    (every id that ends generation: Llama 3 Instruct lists end of text and end of turn)."""
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        config |= _json_object(path.parent / name)
    stop = _json_object(path.parent / "generation_config.json").get("eos_token_id", [])
    stop = [stop] if isinstance(stop, int) else stop
    if not isinstance(stop, list) or not all(isinstance(i, int) for i in stop):
        raise UserError(
            f"{path.parent / 'generation_config.json'}: eos_token_id should be an id or a list of ids"
        )
    return JsonTokenizer.from_file(path, config, stop_ids=stop)


def _json_object(path: Path) -> dict:
    """The JSON object in `path`, or {} when there is no such file."""
    return fileio.read_json(path) if path.is_file() else {}
