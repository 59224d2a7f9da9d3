"""Training the paper's tokenizer (Sec. 2.1): SentencePiece BPE, digits split, byte fallback, with the
trainer options recorded in Meta's released `tokenizer.model`."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.tokenizer.sentencepiece_model import SentencePieceTokenizer, load_processor

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


def train_tokenizer(
    files: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    vocab_size: int = 32000,
    *,
    input_sentence_size: int = 2_000_000,
    num_threads: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> SentencePieceTokenizer:
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
    return SentencePieceTokenizer(output)


def is_sentencepiece_model(path: Path) -> bool:
    """Whether `path` is a SentencePiece model file, the one kind of file tokenizer training replaces."""
    if path.stat().st_size > 1 << 26:  # tokenizer models are a few MB; do not read a large file whole
        return False
    try:
        load_processor(path.read_bytes(), str(path))
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
