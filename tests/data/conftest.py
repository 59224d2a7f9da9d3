"""Fixtures of the data tests."""

from __future__ import annotations

import re

import pytest

from tests.data.helpers import detokenize


@pytest.fixture(scope="session")
def articles(shared_data) -> list[list[str]]:
    """WikiText-2 test articles, each a list of paragraphs (title first)."""
    text = (shared_data / "corpora/wikitext2_raw_test/wikitext-test.txt").read_text(encoding="utf-8")
    out: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if re.fullmatch(r"= [^=].* =", line):
            out.append([line.strip("= ")])
        elif line and out and not line.startswith("="):
            out[-1].append(detokenize(line))
    return [a for a in out if len(a) > 3]
