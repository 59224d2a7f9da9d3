"""A Hugging Face `tokenizer.json` (Llama 3's byte-level BPE, or any pipeline transformers loads),
run by the `tokenizers` library; BOS / EOS come from the folder's tokenizer_config.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import tokenizers

from llamafoundry.errors import UserError
from llamafoundry.tokenizer.base import Tokenizer, check_texts


class JsonTokenizer(Tokenizer):
    """A `tokenizers` pipeline. Special tokens written in the text encode as their ids, as transformers'
    tokenizers do; `config` holds tokenizer_config.json's special-token entries (bos_token, ...)."""

    kind = "tokenizer.json"

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        config: dict,
        name: str,
        *,
        stop_ids: Sequence[int] = (),
        path: Path | None = None,
    ) -> None:
        self.backend = backend
        self.path = path
        self.config = {k: _content(v) for k, v in config.items() if _content(v) is not None}
        self._bos, self._eos = (self._id_of(self.config.get(k), k, name) for k in ("bos_token", "eos_token"))
        self._stop = tuple(dict.fromkeys([self._eos, *stop_ids]))

    @classmethod
    def from_file(cls, path: Path, config: dict, *, stop_ids: Sequence[int] = ()) -> JsonTokenizer:
        """The tokenizer.json at `path`; a UserError when tokenizers cannot read it."""
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
            raise UserError(f"{path} is not a tokenizer.json that tokenizers can load ({exc})") from None
        return cls(backend, config, str(path), stop_ids=stop_ids, path=path)

    def _id_of(self, token: str | None, key: str, name: str) -> int:
        token_id = self.backend.token_to_id(token) if token is not None else None
        if token_id is None:
            raise UserError(
                f"{name}: no {key} in its tokenizer_config.json (or it is not in the vocabulary); "
                "LLaMA needs BOS and EOS tokens"
            )
        return token_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        token_id = self.backend.token_to_id(self.config.get("pad_token", ""))
        return -1 if token_id is None else token_id

    @property
    def unk_id(self) -> int:
        token_id = self.backend.token_to_id(self.config.get("unk_token", ""))
        return -1 if token_id is None else token_id

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return self._stop

    @property
    def special_tokens(self) -> dict[str, int]:
        decoder = self.backend.get_added_tokens_decoder()
        return {token.content: i for i, token in decoder.items() if token.special}

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        check_texts(texts)  # tokenizers would take lone surrogates without a word
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def id_to_piece(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)

    def to_json(self) -> dict:
        """The tokenizer.json content."""
        return json.loads(self.backend.to_str())


def _content(value: object) -> str | None:
    """A special token's text: tokenizer_config.json writes a string or an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
