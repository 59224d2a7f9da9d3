"""C4 (Table 1: 15%) and any JSON Lines corpus: one document per line, plain, .gz, .zst, .bz2 or .xz."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS, open_bytes, strip_suffixes, truncation


class JsonlReader(Reader):
    """Each line a JSON object with the text in `text_field`; the other fields go to `meta`.

    The id is `id_field` when the record has one, else `<file>:<line>` (stable for the same file).
    C4's own records carry `text`, `url` and `timestamp`.
    """

    source = "c4"

    def __init__(self, text_field: str = "text", id_field: str = "id", source: str | None = None) -> None:
        super().__init__(source)
        self.text_field = text_field
        self.id_field = id_field

    def documents(self, path: Path) -> Iterator[Document]:
        name = strip_suffixes(path.name)
        with open_bytes(path) as stream:
            number = 0
            while True:
                try:
                    line = stream.readline()
                except TRUNCATED_ERRORS as exc:
                    self.skip("truncated or corrupt file", f"{path} after line {number}: {exc}")
                    return
                if not line:
                    return
                if not line.endswith(b"\n") and truncation(stream) is not None:
                    self.skip(
                        "truncated or corrupt file", f"{path}: torn line {number + 1}, then the file ends"
                    )
                    return
                number += 1
                doc = self._document(line, name, number, path)
                if doc is not None:
                    yield doc

    def _document(self, line: bytes, name: str, number: int, path: Path) -> Document | None:
        where = f"{path}:{number}"
        if not line.strip():
            return None
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            self.skip("invalid UTF-8", where)
            return None
        except ValueError:
            self.skip("invalid JSON", where)
            return None
        text = obj.pop(self.text_field, None) if isinstance(obj, dict) else None
        if not isinstance(text, str) or not text.strip():
            self.skip(f"no '{self.text_field}' string", where)
            return None
        doc_id = obj.pop(self.id_field, None)
        doc_id = str(doc_id) if doc_id is not None else f"{name}:{number}"
        return Document(doc_id, text, self.source, obj)
