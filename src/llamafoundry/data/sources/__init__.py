"""One reader per public source of Table 1 (plus Python's own docs for the quickstart corpus).

A recipe names a reader by its key here; each is imported only when a run uses it.
"""

from __future__ import annotations

import importlib

from llamafoundry.data.sources.base import Reader
from llamafoundry.errors import UserError

READERS = {
    "commoncrawl": "llamafoundry.data.sources.commoncrawl:CommonCrawlReader",
    "c4": "llamafoundry.data.sources.jsonl:JsonlReader",
    "jsonl": "llamafoundry.data.sources.jsonl:JsonlReader",
    "github": "llamafoundry.data.sources.github:GitHubReader",
    "wikipedia": "llamafoundry.data.sources.wikipedia:WikipediaReader",
    "books": "llamafoundry.data.sources.books:BooksReader",
    "arxiv": "llamafoundry.data.sources.arxiv:ArxivReader",
    "stackexchange": "llamafoundry.data.sources.stackexchange:StackExchangeReader",
    "pydocs": "llamafoundry.data.sources.pydocs:PythonDocsReader",
}


def reader_class(name: str) -> type[Reader]:
    """The reader class a recipe calls `name`."""
    if name not in READERS:
        raise UserError(f"unknown reader {name!r}; choose one of {', '.join(READERS)}")
    module, cls = READERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["READERS", "Reader", "reader_class"]
