"""The unit that flows through the data pipeline (Sec. 2.1): one document of one source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """A document with a stable id (same input, same id) and its provenance.

    `source` names the Table 1 source it came from ("commoncrawl", "c4", "github", "wikipedia",
    "books", "arxiv", "stackexchange", or a user's own name); `meta` carries per-source facts such as
    the URL, file path, language or license, and is written out with the text.
    """

    id: str
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
