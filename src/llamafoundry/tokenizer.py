"""The paper's tokenizer (Sec. 2.1): SentencePiece BPE, digits split, byte fallback.

`Tokenizer` loads any SentencePiece model, Meta's released `tokenizer.model` included, and encodes
exactly as Meta's reference `llama/tokenizer.py` does (optional BOS, SentencePiece ids, optional EOS).
`train_tokenizer` trains a new one with the trainer options recorded in Meta's file.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from llamafoundry import fileio
from llamafoundry.errors import UserError

# Trainer options of Meta's released tokenizer.model, read from its trainer_spec and normalizer_spec.
LLAMA_TRAINER_OPTIONS: dict[str, object] = {
    "model_type": "bpe",
    "character_coverage": 0.99995,
    "split_digits": True,  # every digit its own token
    "byte_fallback": True,  # unknown UTF-8 characters become byte tokens, never <unk>
    "allow_whitespace_only_pieces": True,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "max_sentencepiece_length": 16,
    "max_sentence_length": 4192,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "normalization_rule_name": "identity",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
    "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True,
}
# Byte fallback's 256 pieces, unk, bos and eos, and at least one character of the text.
MIN_VOCAB_SIZE = 256 + 3 + 1


class Tokenizer:
    """A SentencePiece model with LLaMA's special ids (unk 0, bos 1, eos 2, no pad)."""

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} not found; pass a SentencePiece tokenizer.model")
        self.path = path
        self.sp = _load_processor(path.read_bytes(), str(path))

    @classmethod
    def from_bytes(cls, proto: bytes, name: str = "<bytes>") -> Tokenizer:
        tok = cls.__new__(cls)
        tok.path = None
        tok.sp = _load_processor(proto, name)
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

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """The ids of `text`; text that is no valid Unicode (undecodable input bytes) is a UserError."""
        return self.encode_batch([text], bos, eos)[0]

    def encode_batch(self, texts: Sequence[str], bos: bool = True, eos: bool = False) -> list[list[int]]:
        """Encode many texts in one call (SentencePiece's C++ loop, much faster than one call each)."""
        try:
            batch = self.sp.encode(list(texts))
        except (RuntimeError, TypeError):
            _check_texts(texts)
            raise
        return [([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else []) for ids in batch]

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def id_to_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def serialized(self) -> bytes:
        """The model file's bytes, to copy it into a model folder unchanged."""
        return self.sp.serialized_model_proto()

    def save(self, path: str | os.PathLike) -> None:
        fileio.write_bytes(path, self.serialized())


def _check_texts(texts: Sequence[str]) -> None:
    """A UserError for the first text SentencePiece cannot take: not a string, or not encodable as
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


def _load_processor(proto: bytes, name: str) -> spm.SentencePieceProcessor:
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


def train_tokenizer(
    files: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    vocab_size: int = 32000,
    *,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Tokenizer:
    """Train a BPE tokenizer with the LLaMA trainer options on text files; write it to `output`.

    Each line of each file is a training sentence; beyond `input_sentence_size` lines, a uniform sample
    of that many, drawn by `seed`. The result is written atomically: a failed run leaves no file at
    `output`. The same files and seed give the same tokenizer. An existing file is replaced only with
    `overwrite`, and only a SentencePiece model.
    """
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte pieces, unk, bos, eos and the "
            f"text's characters), got {vocab_size}"
        )
    if input_sentence_size < 0:
        raise UserError(f"input_sentence_size must be 0 (every line) or more, got {input_sentence_size}")
    paths = [Path(f) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise UserError(f"tokenizer training files not found: {missing or 'none given'}")
    if all(p.stat().st_size == 0 for p in paths):
        raise UserError("tokenizer training files are all empty; give files with text")
    output = Path(output)
    with (
        fileio.output_file(output, overwrite=overwrite, recognise=is_sentencepiece_model) as target,
        tempfile.TemporaryDirectory(dir=output.parent) as tmp,
    ):
        prefix = os.path.join(tmp, "tokenizer")
        sample = _sample_lines(paths, input_sentence_size, seed, Path(tmp) / "sample.txt")
        try:
            spm.SentencePieceTrainer.train(
                input=[str(sample)] if sample else [str(p) for p in paths],
                model_prefix=prefix,
                vocab_size=vocab_size,
                input_sentence_size=0,  # every line of the input (sampled above when too many)
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=2,
                **LLAMA_TRAINER_OPTIONS,
            )
        except RuntimeError as exc:
            raise UserError(f"tokenizer training failed: {str(exc).strip().splitlines()[-1]}") from None
        os.replace(prefix + ".model", target)
    return Tokenizer(output)


def is_sentencepiece_model(path: Path) -> bool:
    """Whether `path` is a SentencePiece model file, the one kind of file tokenizer training replaces."""
    if path.stat().st_size > 1 << 26:  # tokenizer models are a few MB; do not read a large file whole
        return False
    try:
        _load_processor(path.read_bytes(), str(path))
    except UserError:
        return False
    return True


def _sample_lines(paths: Sequence[Path], size: int, seed: int, out: Path) -> Path | None:
    """Write a uniform sample of `size` lines of `paths` to `out` (reservoir sampling); None when they
    hold no more lines than that, or `size` is 0 (SentencePiece's "every line").

    SentencePiece samples too, but its sample differs from run to run even with its generator seeded,
    and so did the tokenizers trained on it.
    """
    if size <= 0:
        return None
    rng = random.Random(seed)
    sample: list[bytes] = []
    seen = 0
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                seen += 1
                if len(sample) < size:
                    sample.append(line)
                elif (j := rng.randrange(seen)) < size:
                    sample[j] = line
    if seen <= size:
        return None
    out.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in sample))
    return out
