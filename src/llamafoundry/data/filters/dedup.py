"""Deduplication (Sec. 2.1): CCNet's line-level dedup for CommonCrawl, exact file-level dedup for GitHub,
MinHash near-duplicate removal for books.

All three remember what they saw, so they run over a shard group in order (one instance per group): the
first occurrence is kept, later ones go. A recipe sets the group size (CCNet dedups within groups of
shards, so a group's hashes fit in memory).
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys

import xxhash

from llamafoundry.data.document import Document
from llamafoundry.data.stage import Stage

# CCNet's text_normalizer.UNICODE_PUNCT: the punctuation its dedup normalisation strips.
UNICODE_PUNCT = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
NON_PRINTING = [*range(0, 32), *range(127, 160)]


@functools.cache
def _dedup_table() -> dict[int, str | None]:
    """One `str.translate` table doing CCNet's three substitutions at once: every Unicode decimal digit
    (regex \\d) -> "0", then its punctuation and the control characters removed."""
    table: dict[int, str | None] = {c: None for c in NON_PRINTING}
    table.update({ord(c): None for c in UNICODE_PUNCT})
    # CCNet replaces digits before removing punctuation, so the fullwidth "１" becomes "0".
    table.update({c: "0" for c in range(sys.maxunicode + 1) if chr(c).isdecimal()})
    return table


def normalize_for_dedup(line: str) -> str:
    """CCNet's `normalize_for_dedup`: strip, lowercase, digits to 0, its punctuation and control
    characters removed."""
    return line.strip().lower().translate(_dedup_table())


class LineDedup(Stage):
    """CCNet line dedup: a line (paragraph) whose normalised hash was seen earlier in the shard group is
    removed; a page left with no line is dropped. Boilerplate (menus, cookie banners, footers) repeated
    across pages goes, the first page keeps its copy."""

    name = "line_dedup"
    stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()
        self._table = _dedup_table()

    def apply(self, doc: Document) -> Document | str:
        seen, table, digest = self.seen, self._table, xxhash.xxh3_64_intdigest
        kept = []
        for line in doc.text.split("\n"):
            h = digest(line.strip().lower().translate(table).encode("utf-8", "surrogatepass"))
            if h not in seen:
                seen.add(h)
                kept.append(line)
        removed = doc.text.count("\n") + 1 - len(kept)
        if not removed:
            return doc
        self.stats.tallies["lines removed"] += removed
        text = "\n".join(kept).strip()
        if not text:
            return "all lines seen before"
        return Document(doc.id, text, doc.source, doc.meta)


def content_key(text: str) -> bytes:
    """A file's identity for exact dedup: its lines without trailing whitespace, no blank lines at the
    ends (so CRLF/LF and editor trailing spaces do not make copies look different), BLAKE2b-128."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return hashlib.blake2b("\n".join(lines).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ExactDedup(Stage):
    """Exact file-level dedup (GitHub): the first document with given normalised content is kept."""

    name = "exact_dedup"
    stateful = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[bytes] = set()

    def apply(self, doc: Document) -> Document | str:
        key = content_key(doc.text)
        if key in self.seen:
            return "exact duplicate"
        self.seen.add(key)
        return doc


_WORD = re.compile(r"\w+")


class MinHashDedup(Stage):
    """Book-level near-dup removal (Sec. 2.1: books "with more than 90% content overlap"): a book is
    dropped when an earlier kept book shares at least `threshold` of the word n-grams of the smaller of
    the two. Candidates come from MinHash LSH (datasketch); the overlap is estimated from the MinHash
    Jaccard and both set sizes: |A ∩ B| = J (|A| + |B|) / (1 + J)."""

    name = "minhash_dedup"
    stateful = True

    def __init__(self, threshold: float = 0.9, ngram: int = 5, num_perm: int = 256, seed: int = 1) -> None:
        from datasketch import MinHashLSH

        super().__init__()
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.ngram, self.num_perm, self.seed = threshold, ngram, num_perm, seed
        # Equal-size books at the overlap threshold have Jaccard t / (2 - t); ask LSH for a bit less.
        lsh_threshold = max(0.05, threshold / (2 - threshold) - 0.15)
        self.lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm)
        self.kept: dict[str, tuple[object, int]] = {}

    def shingles(self, text: str) -> set[bytes]:
        """The distinct lowercased word n-grams of a book."""
        words = _WORD.findall(text.lower())
        n = self.ngram
        if len(words) < n:
            return {" ".join(words).encode()}
        return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}

    def minhash(self, shingles: set[bytes]):
        """The MinHash signature of a set of shingles."""
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=xxhash.xxh32_intdigest)
        m.update_batch(list(shingles))
        return m

    def overlap(self, a: tuple[object, int], b: tuple[object, int]) -> float:
        """Estimated share of the smaller book's n-grams that the other book has too."""
        (ma, na), (mb, nb) = a, b
        j = ma.jaccard(mb)
        return j * (na + nb) / (1 + j) / min(na, nb)

    def apply(self, doc: Document) -> Document | str:
        shingles = self.shingles(doc.text)
        entry = (self.minhash(shingles), len(shingles))
        for other in self.lsh.query(entry[0]):
            if self.overlap(entry, self.kept[other]) >= self.threshold:
                self.stats.tallies["near-duplicate pairs"] += 1
                return "near-duplicate book"
        key = f"{len(self.kept)}:{doc.id}"
        self.lsh.insert(key, entry[0])
        self.kept[key] = entry
        return doc
