"""Dedup stages: CCNet line dedup, exact file dedup, MinHash near-duplicate books."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamafoundry.data.document import Document
from llamafoundry.data.filters.dedup import (
    UNICODE_PUNCT,
    ExactDedup,
    LineDedup,
    MinHashDedup,
    normalize_for_dedup,
)

# CCNet's normalize_for_dedup, step by step with regular expressions as CCNet writes it: the oracle.
_CCNET_DIGIT = re.compile(r"\d")
_CCNET_PUNCT_OR_CONTROL = re.compile(
    "[" + UNICODE_PUNCT + "".join(map(chr, [*range(32), *range(127, 160)])) + "]"
)


def ccnet_normalize(line: str) -> str:
    line = line.strip()
    if not line:
        return line
    return _CCNET_PUNCT_OR_CONTROL.sub("", _CCNET_DIGIT.sub("0", line.lower()))


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8", categories=None), max_size=40)
    | st.text(alphabet="Ab1１٣ ，。—…\t\x01\x85«»%", max_size=20)
)
def test_normalisation_matches_ccnet(line):
    assert normalize_for_dedup(line) == ccnet_normalize(line)


def _doc(i: int, text: str) -> Document:
    return Document(f"page-{i}", text, "commoncrawl", {})


def test_line_dedup_removes_boilerplate_and_keeps_first_occurrences():
    pages = [
        "Home | News | Contact\nThe river rose by 3 metres overnight.\n© 2019 Example Media. All rights reserved.",
        "HOME | NEWS | CONTACT\nA new bridge opened on Tuesday.\n© 2020 Example Media. All rights reserved.",
        "Home | News | Contact\n© 2021 Example Media. All rights reserved.",  # nothing of its own
        "Farmers expect a good harvest.\nThe river rose by 3 metres overnight.",
    ]
    stage = LineDedup()
    out = list(stage(_doc(i, t) for i, t in enumerate(pages)))
    assert [d.text for d in out] == [
        pages[0],
        "A new bridge opened on Tuesday.",
        "Farmers expect a good harvest.",
    ]
    assert [d.id for d in out] == ["page-0", "page-1", "page-3"]
    assert stage.stats.dropped == {"all lines seen before": 1}
    assert stage.stats.tallies["lines removed"] == 2 + 2 + 1
    assert (stage.stats.docs_in, stage.stats.docs_out) == (4, 3)
    assert stage.stats.bytes_out == sum(len(d.text.encode()) for d in out)


def test_exact_dedup_ignores_line_endings_and_trailing_spaces():
    files = ["def f():\n    return 1\n", "def f():  \r\n    return 1\r\n\r\n", "def g():\n    return 1\n"]
    stage = ExactDedup()
    out = list(stage(Document(f"f{i}", t, "github", {}) for i, t in enumerate(files)))
    assert [d.id for d in out] == ["f0", "f2"]
    assert stage.stats.dropped == {"exact duplicate": 1}


@pytest.fixture(scope="module")
def books(shared_data):
    words = (shared_data / "corpora/tinyshakespeare/input.txt").read_text().split()
    base, other = words[:20000], words[60000:]

    def variant(share_changed: float) -> str:
        # The same book with its last `share_changed` of words replaced by different text.
        keep = int(len(base) * (1 - share_changed))
        return " ".join(base[:keep] + other[: len(base) - keep])

    return " ".join(base), variant(0.05), variant(0.20)


def test_minhash_flags_95_percent_overlap_and_keeps_80(books):
    original, overlap95, overlap80 = books
    stage = MinHashDedup(threshold=0.9)
    out = list(
        stage(
            Document(n, t, "books", {})
            for n, t in [("original", original), ("copy95", overlap95), ("copy80", overlap80)]
        )
    )
    assert [d.id for d in out] == ["original", "copy80"]
    assert stage.stats.dropped == {"near-duplicate book": 1}


def test_minhash_threshold_is_configurable(books):
    original, _, overlap80 = books
    stage = MinHashDedup(threshold=0.75)
    out = list(stage(Document(n, t, "books", {}) for n, t in [("original", original), ("copy80", overlap80)]))
    assert [d.id for d in out] == ["original"]
