"""CCNet's reference language model for the perplexity filter (Sec. 2.1: "an n-gram language model"
trained on Wikipedia), built from Wikipedia dumps alone.

The articles come cleaned by the dump reader; each line is normalised as the filter normalises what it
scores (`normalize_for_lm`); a SentencePiece model is trained on those lines and a 5-gram modified
Kneser-Ney model over its pieces (`kneser_ney`). The folder gets `<lang>.sp.model` and `<lang>.arpa`,
CCNet's names: the perplexity stage's `tokenizer` and `model` (KenLM reads the ARPA file as it is).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llamafoundry import fileio
from llamafoundry.data.document import Document
from llamafoundry.data.filters.perplexity import normalize_for_lm
from llamafoundry.data.kneser_ney import estimate
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import train_tokenizer

KIND = "reference language model"
# Lines handed to SentencePiece at a time when cutting the text into pieces.
ENCODE_BATCH = 4096


def train_reference_lm(
    documents: Iterable[Document],
    output: str | os.PathLike,
    *,
    order: int = 5,
    vocab_size: int = 32000,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write `<lang>.sp.model` and `<lang>.arpa` (an `order`-gram model over its pieces) into the folder
    `output`, from Wikipedia articles (all of one language); return what went in and what came out."""
    output = Path(output)
    with (
        fileio.atomic_dir(output, kind=KIND, overwrite=overwrite) as folder,
        tempfile.TemporaryDirectory(dir=folder.parent) as scratch,
    ):
        text = Path(scratch) / "lines.txt"
        language, pages, lines = _write_lines(documents, text, progress)
        tokenizer = folder / f"{language}.sp.model"
        train_tokenizer([text], tokenizer, vocab_size)
        pieces = _Pieces(tokenizer, text)
        model = estimate(pieces, order)
        model.write_arpa(folder / f"{language}.arpa", progress)
    return {
        "model": str(output / f"{language}.arpa"),
        "tokenizer": str(output / f"{language}.sp.model"),
        "pages": pages,
        "lines": lines,
        "pieces": pieces.count,
        "ngrams": [len(o.last) for o in model.orders],
        "discounts": model.discounts,
    }


def _write_lines(documents: Iterable[Document], path: Path, progress: bool) -> tuple[str, int, int]:
    """Every non-empty normalised line of the articles into `path`; the articles' language, the
    number of articles and of lines."""
    languages: set[str] = set()
    pages = lines = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in tqdm(documents, desc="reading articles", unit=" pages", disable=not progress):
            languages.add(doc.meta.get("language") or "wiki")
            pages += 1
            for raw in doc.text.split("\n"):
                line = normalize_for_lm(raw)
                if line:
                    f.write(line + "\n")
                    lines += 1
    if len(languages) > 1:
        raise UserError(
            f"the dumps are in several languages ({', '.join(sorted(languages))}); CCNet builds one "
            "reference model per language: give the dumps of one"
        )
    if not lines:
        raise UserError("the dumps hold no article text to build a reference model from")
    return languages.pop(), pages, lines


class _Pieces:
    """The lines of a text file as SentencePiece pieces, one sentence per line, as the filter cuts them;
    `count` is the number of pieces read so far."""

    def __init__(self, tokenizer: Path, text: Path) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
        self.text = text
        self.count = 0

    def __iter__(self) -> Iterator[list[str]]:
        with open(self.text, encoding="utf-8") as f:
            while batch := [line.rstrip("\n") for line in islice(f, ENCODE_BATCH)]:
                for pieces in self.sp.encode(batch, out_type=str):
                    self.count += len(pieces)
                    yield pieces
