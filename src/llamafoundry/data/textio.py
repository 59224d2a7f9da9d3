"""Files in and out of the pipeline: compressed inputs by suffix, and the JSONL.zst document shards.

The shard format is the contract with the tokenizer/sharder (`data/shards.py`): JSON Lines compressed
with zstandard, one object per line with `id`, `text`, `source` and `meta`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from llamafoundry.data.document import Document
from llamafoundry.errors import UserError
from llamafoundry.fileio import atomic_path

SHARD_SUFFIX = ".jsonl.zst"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".xz")
# What a cut-off compressed file raises part way through, by library.
TRUNCATED_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, zstandard.ZstdError, lzma.LZMAError)


class _Decompressed(io.RawIOBase):
    """A decompressing stream that hands out every byte it could decompress before reporting a cut-off
    file: on an error it first returns end-of-file (so a buffered read keeps the data it gathered), then
    raises on the next read; `error` keeps it for readers (warcio) that take any error for the end."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.error is not None:
            raise self.error
        try:
            data = self.stream.read1(len(buffer))
        except TRUNCATED_ERRORS as exc:
            self.error = exc
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def open_bytes(path: str | os.PathLike) -> io.BufferedReader:
    """A buffered, line-iterable binary stream of the file's content, decompressed by suffix (.gz .bz2
    .zst .xz). A truncated compressed file yields all its readable bytes, then raises (one of
    TRUNCATED_ERRORS) on the next read; `truncation(stream)` tells afterwards."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        inner = gzip.open(path, "rb")  # noqa: SIM115 (closed with the returned stream)
    elif suffix == ".bz2":
        inner = bz2.open(path, "rb")  # noqa: SIM115
    elif suffix == ".xz":
        inner = lzma.open(path, "rb")  # noqa: SIM115
    elif suffix == ".zst":
        raw = open(path, "rb")  # noqa: SIM115 (closed with the reader: closefd)
        inner = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
    else:
        return open(path, "rb")  # noqa: SIM115 (the caller's context manager closes it)
    return io.BufferedReader(_Decompressed(inner), buffer_size=1 << 16)


def truncation(stream: BinaryIO) -> BaseException | None:
    """The error that cut a stream from `open_bytes` short, if any."""
    raw = getattr(stream, "raw", None)
    return raw.error if isinstance(raw, _Decompressed) else None


def strip_suffixes(name: str) -> str:
    """`CC-MAIN-0001.warc.wet.gz` -> `CC-MAIN-0001.warc.wet`: the name without its compression suffix."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def document_record(doc: Document) -> bytes:
    """One line of a shard."""
    obj = {"id": doc.id, "text": doc.text, "source": doc.source, "meta": doc.meta}
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def write_shard(path: str | os.PathLike, docs: Iterable[Document], level: int = 3) -> int:
    """Write `docs` to a .jsonl.zst shard atomically (temp file, then rename); the number written."""
    count = 0
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as raw,
        zstandard.ZstdCompressor(level=level).stream_writer(raw, closefd=False) as out,
    ):
        for doc in docs:
            out.write(document_record(doc))
            count += 1
    return count


def read_shard(path: str | os.PathLike) -> Iterator[Document]:
    """The documents of a shard written by `write_shard` (or any JSONL(.zst/.gz) with those fields)."""
    with open_bytes(path) as stream:
        number = 0
        while True:
            try:
                line = stream.readline()
            except TRUNCATED_ERRORS as exc:
                raise UserError(f"{path} is truncated or corrupt after line {number} ({exc})") from None
            if not line:
                return
            number += 1
            try:
                obj = json.loads(line)
                yield Document(obj["id"], obj["text"], obj["source"], obj.get("meta") or {})
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{path} line {number} is not a document record ({exc})") from None
