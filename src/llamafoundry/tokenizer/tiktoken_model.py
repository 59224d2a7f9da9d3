"""Meta's Llama 3 `tokenizer.model`: tiktoken ranks, Meta's regex and its 256 special tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tiktoken

from llamafoundry.tokenizer.base import Tokenizer, check_texts
from llamafoundry.tokenizer.bytelevel import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    LLAMA3_STOP_TOKENS,
    json_from_ranks,
    spell,
    write_ranks,
)


class TiktokenTokenizer(Tokenizer):
    """Meta's llama3 `Tokenizer`: BOS <|begin_of_text|>, EOS <|end_of_text|>, generation also ends at
    <|eot_id|> and <|eom_id|>. Special tokens written in the text encode as their ids, as Hugging Face's
    Llama 3 tokenizer does (Meta's reference spells them out unless the caller allows them)."""

    kind = "tiktoken"

    def __init__(self, ranks: dict[bytes, int], name: str, path: Path | None = None) -> None:
        self.ranks = ranks
        self.path = path
        self.specials = {token: len(ranks) + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding(
            name=name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=self.specials
        )
        self._pieces: dict[int, str] = {}

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def bos_id(self) -> int:
        return self.specials["<|begin_of_text|>"]

    @property
    def eos_id(self) -> int:
        return self.specials["<|end_of_text|>"]

    @property
    def eos_ids(self) -> tuple[int, ...]:
        return tuple(self.specials[t] for t in LLAMA3_STOP_TOKENS)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.specials)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        check_texts(texts)  # tiktoken would replace lone surrogates without a word
        return [self.encoding.encode(text, allowed_special="all") for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))

    def id_to_piece(self, token_id: int) -> str:
        """The token in tokenizer.json's byte-level spelling (special tokens by name)."""
        if not self._pieces:
            self._pieces = {rank: spell(token) for token, rank in self.ranks.items()}
            self._pieces |= {i: name for name, i in self.specials.items()}
        return self._pieces[token_id]

    def serialized(self) -> bytes:
        """The rank file, as Meta ships it."""
        return write_ranks(self.ranks)

    def to_json(self) -> dict:
        """Hugging Face's tokenizer.json that encodes exactly as this tokenizer does."""
        return json_from_ranks(self.ranks, LLAMA3_SPECIAL_TOKENS, "<|begin_of_text|>")
