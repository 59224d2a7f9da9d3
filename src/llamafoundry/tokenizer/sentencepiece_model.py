"""The paper's tokenizer (Sec. 2.1): a SentencePiece model, Meta's released `tokenizer.model` included.

It encodes exactly as Meta's reference `llama/tokenizer.py` does (optional BOS, SentencePiece ids,
optional EOS).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.tokenizer.base import Tokenizer


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model with LLaMA's special ids (unk 0, bos 1, eos 2, no pad)."""

    kind = "sentencepiece"

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} not found; pass a SentencePiece tokenizer.model")
        self.path = path
        self.sp = load_processor(path.read_bytes(), str(path))

    @classmethod
    def from_bytes(cls, proto: bytes, name: str = "<bytes>") -> SentencePieceTokenizer:
        tok = cls.__new__(cls)
        tok.path = None
        tok.sp = load_processor(proto, name)
        return tok

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)  # SentencePiece's C++ loop, much faster than one call each

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def id_to_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def serialized(self) -> bytes:
        """The model file's bytes, to copy it into a model folder unchanged."""
        return self.sp.serialized_model_proto()

    def save(self, path: str | os.PathLike) -> None:
        fileio.write_bytes(path, self.serialized())


def load_processor(proto: bytes, name: str) -> spm.SentencePieceProcessor:
    """A SentencePiece processor of `proto`; a UserError naming `name` when it is none, or lacks BOS/EOS."""
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError, UnicodeDecodeError) as exc:  # the last: a message quoting bad bytes
        raise UserError(
            f"{name} is not a valid SentencePiece model ({exc}); pass a tokenizer.model file"
        ) from None
    # Every encode starts with BOS and training ends documents with EOS: both must be real pieces.
    if not (0 <= sp.bos_id() < sp.vocab_size() and 0 <= sp.eos_id() < sp.vocab_size()):
        raise UserError(
            f"{name} has no BOS or EOS piece (ids {sp.bos_id()}, {sp.eos_id()}); LLaMA needs both"
        )
    return sp
