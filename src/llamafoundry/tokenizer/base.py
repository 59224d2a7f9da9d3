"""The one tokenizer interface every caller uses, whatever file the tokenizer came from."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from llamafoundry.errors import UserError


class Tokenizer(abc.ABC):
    """Text <-> token ids, with the model's special ids.

    `encode(text, bos=True, eos=False)` adds BOS / EOS around the text's ids as Meta's reference does.
    `kind` names the implementation ('sentencepiece', 'tokenizer.json', 'tiktoken'): the exports write
    each kind in its own files. `eos_ids` are all the ids that end generation (Llama 3's end of turn
    too); `special_tokens` are the pieces that stand for one id in rendered chat text.
    """

    kind: ClassVar[str]
    path: Path | None = None
    chat_template: str | None = None  # Jinja, from the tokenizer's folder; the exports carry it

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def bos_id(self) -> int: ...

    @property
    @abc.abstractmethod
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int:
        return -1

    @property
    def unk_id(self) -> int:
        return -1

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return (self.eos_id,)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {self.id_to_piece(self.bos_id): self.bos_id, self.id_to_piece(self.eos_id): self.eos_id}

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """The ids of `text`; text that is no valid Unicode (undecodable input bytes) is a UserError."""
        return self.encode_batch([text], bos, eos)[0]

    def encode_batch(self, texts: Sequence[str], bos: bool = True, eos: bool = False) -> list[list[int]]:
        """Encode many texts in one call (the library's own batch loop where it has one)."""
        try:
            batch = self._encode_texts(list(texts))
        except (RuntimeError, TypeError, UnicodeEncodeError):
            check_texts(texts)
            raise
        return [([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else []) for ids in batch]

    @abc.abstractmethod
    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """The ids of each text, without BOS or EOS."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def id_to_piece(self, token_id: int) -> str: ...


def check_texts(texts: Sequence[str]) -> None:
    """A UserError for the first text a tokenizer cannot take: not a string, or not encodable as
    UTF-8 (lone surrogates: what undecodable bytes become when Python reads a file or stdin)."""
    for text in texts:
        if isinstance(text, bytes):  # SentencePiece takes UTF-8 bytes as they are
            continue
        if not isinstance(text, str):
            raise UserError(f"only text can be encoded, got a {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])  # 0xDC80-0xDCFF: the undecodable byte 0x80-0xFF, escaped
            what = (
                f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
            )
            raise UserError(
                f"the text is not valid UTF-8 ({what} at character {exc.start}); fix its encoding"
            ) from None
