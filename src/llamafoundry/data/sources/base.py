"""What every source reader shares: a `read(path) -> Iterator[Document]` method and the count of what it
read and what malformed input it skipped (for the run report)."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from llamafoundry.data.document import Document
from llamafoundry.data.stage import StageStats, utf8_len

log = logging.getLogger(__name__)


class Reader(ABC):
    """A source reader. Subclasses set `source` (the Table 1 name, which a recipe may rename) and implement
    `documents(path)`, calling `skip(reason, where)` for input they cannot use; the run goes on."""

    source: ClassVar[str]

    def __init__(self, source: str | None = None) -> None:
        if source:
            self.source = source  # type: ignore[misc]  (an instance may be named by the recipe)
        self.stats = StageStats("read")

    @abstractmethod
    def documents(self, path: Path) -> Iterator[Document]:
        """The documents in `path` (a file or a folder, as the source defines)."""

    def read(self, path: str | os.PathLike) -> Iterator[Document]:
        """Stream the documents of `path`, counting them (and what was skipped) in `self.stats`."""
        stats = self.stats
        stats.tallies["inputs"] += 1
        for doc in self.documents(Path(path)):
            size = utf8_len(doc.text)
            stats.docs_in += 1
            stats.docs_out += 1
            stats.bytes_in += size
            stats.bytes_out += size
            yield doc

    def skip(self, reason: str, where: str) -> None:
        """Count one unusable record (or file) and say where, at debug level: the report has the totals."""
        self.stats.docs_in += 1
        self.stats.drop(reason, where)
        log.debug("%s: skipped %s (%s)", self.source, where, reason)
