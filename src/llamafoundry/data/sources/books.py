"""Books (Table 1: 4.5%): plain-text books, one per file (Project Gutenberg, Books3), plain or compressed.

Project Gutenberg's licence header and footer are cut at their `*** START OF ...` / `*** END OF ...`
markers, since they repeat in every book; near-duplicate books are the MinHash stage's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS, open_bytes, strip_suffixes, truncation

_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_TITLE = re.compile(r"^Title:\s*(.+)$", re.MULTILINE)


def strip_gutenberg(text: str) -> tuple[str, str | None]:
    """(the book's body, its title from the Gutenberg header or None)."""
    start, end = _START.search(text), _END.search(text)
    title = _TITLE.search(text[: start.start()] if start else text[:5000])
    if start:
        text = text[start.end() :]
        end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip(), title.group(1).strip() if title else None


class BooksReader(Reader):
    """A `.txt` file (or .txt.gz/.bz2/.zst/.xz) is one book; a folder, every such file under it."""

    source = "books"

    def documents(self, path: Path) -> Iterator[Document]:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            name = strip_suffixes(file.name)
            if not name.lower().endswith(".txt"):
                continue
            rel = file.relative_to(path).as_posix() if file != path else file.name
            doc = self._book(file, rel, name)
            if doc is not None:
                yield doc

    def _book(self, file: Path, rel: str, name: str) -> Document | None:
        try:
            with open_bytes(file) as stream:
                data = stream.read()
                error = truncation(stream)
        except TRUNCATED_ERRORS as exc:
            error = exc
        if error is not None:  # half a book is no book
            self.skip("truncated or corrupt file", f"{rel}: {error}")
            return None
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.skip("invalid UTF-8", rel)
            return None
        text, title = strip_gutenberg(raw.replace("\r\n", "\n"))
        if not text:
            self.skip("empty book", rel)
            return None
        stem = strip_suffixes(rel)[: -len(".txt")]
        return Document(f"books:{stem}", text, self.source, {"title": title or name[:-4], "path": rel})
