"""What every pipeline step shares (Sec. 2.1): documents in, documents out, and a count of what was
dropped and why.

A stage is any callable `Iterable[Document] -> Iterable[Document]`; the `Stage` base class adds the
bookkeeping (documents and UTF-8 bytes in and out, drop reasons) that the run report shows. A source
reader keeps the same kind of `StageStats`, where `dropped` counts skipped malformed input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llamafoundry.data.document import Document


def utf8_len(text: str) -> int:
    """Bytes of `text` in UTF-8; free for ASCII text (CPython knows a string is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass
class StageStats:
    """Counts of one stage (or reader) over one or more shards; `merge` adds shards together."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> documents dropped (or records skipped)
    tallies: Counter = field(default_factory=Counter)  # facts worth a report line: languages, lines removed
    examples: dict[str, str] = field(default_factory=dict)  # reason -> where it first happened

    def drop(self, reason: str, where: str | None = None) -> None:
        """Count one dropped document (or skipped record) and remember where the first of its kind was."""
        self.dropped[reason] += 1
        if where is not None and reason not in self.examples:
            self.examples[reason] = where

    def merge(self, other: StageStats) -> None:
        """Add another shard's counts to these."""
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.dropped.update(other.dropped)
        self.tallies.update(other.tallies)
        for reason, where in other.examples.items():
            self.examples.setdefault(reason, where)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (the shard stats files and the report)."""
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(sorted(self.dropped.items())),
            "tallies": dict(sorted(self.tallies.items())),
            "examples": dict(sorted(self.examples.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        """The inverse of `to_dict`."""
        return cls(
            d["name"],
            d["docs_in"],
            d["docs_out"],
            d["bytes_in"],
            d["bytes_out"],
            Counter(d["dropped"]),
            Counter(d["tallies"]),
            dict(d["examples"]),
        )


@dataclass
class ShardResult:
    """A shard's counts, from this run or from the stats file of the run that finished it."""

    source: str
    shard: str
    stats: list[StageStats]  # the reader's, then each stage's
    skipped: bool  # finished by an earlier run


class Stage(ABC):
    """A document-at-a-time stage: subclasses set `name` and implement `apply`.

    `apply(doc)` returns the document (possibly with new text) to keep it, or a short reason string to
    drop it. Stateful stages (`stateful = True`: the dedup stages) remember what they saw, so a shard
    group must pass through one instance in order.
    """

    name: ClassVar[str] = "stage"
    stateful: ClassVar[bool] = False

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    @abstractmethod
    def apply(self, doc: Document) -> Document | str:
        """The kept document, or the reason it is dropped."""

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        stats = self.stats
        for doc in docs:
            size = utf8_len(doc.text)
            stats.docs_in += 1
            stats.bytes_in += size
            out = self.apply(doc)
            if isinstance(out, str):
                stats.dropped[out] += 1
                continue
            stats.docs_out += 1
            stats.bytes_out += size if out.text is doc.text else utf8_len(out.text)
            yield out
