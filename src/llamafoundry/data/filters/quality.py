"""Heuristic quality filters (Sec. 2.1): C4's page and line rules ("the presence of punctuation marks or
the number of words and sentences in a webpage") and the GitHub rules ("based on the line length or
proportion of alphanumeric characters", "boilerplate, such as headers, removed with regular expressions").
"""

from __future__ import annotations

import re
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError

# C4 (Raffel et al. 2020, and TFDS c4_utils, its reference code).
TERMINAL_PUNCTUATION = (".", "!", "?", '"')
ELLIPSIS = "..."
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_ALNUM_RUN = re.compile(r"[^\W_]+")  # letters and digits (str.isalnum), not "_"
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


class C4Quality(Stage):
    """C4's rules. Lines kept: ending in terminal punctuation (not an ellipsis), with at least
    `min_words_per_line` words, no word over `max_word_length`, no "javascript", no cookie or policy
    notice; Wikipedia-style citation marks removed. Pages dropped: fewer than `min_sentences` sentences
    left, "lorem ipsum", a curly bracket (code), or a word from `badwords` (a file, one word or phrase per
    line, e.g. the LDNOOBW list C4 used)."""

    name = "c4_quality"

    def __init__(
        self,
        min_words_per_line: int = 3,
        min_sentences: int = 5,
        max_word_length: int = 1000,
        drop_curly_bracket: bool = True,
        badwords: str | None = None,
    ) -> None:
        super().__init__()
        self.min_words_per_line = min_words_per_line
        self.min_sentences = min_sentences
        self.max_word_length = max_word_length
        self.drop_curly_bracket = drop_curly_bracket
        self.badwords = _badwords_pattern(badwords) if badwords else None

    def apply(self, doc: Document) -> Document | str:
        text = doc.text
        lower = text.lower()
        if "lorem ipsum" in lower:
            return "lorem ipsum"
        if self.drop_curly_bracket and "{" in text:
            return "curly bracket"
        if self.badwords is not None and self.badwords.search(lower):
            return "bad word"
        # Fast path: the per-line substring checks only run on pages that contain the words at all.
        check_words = "javascript" in lower or any(p in lower for p in POLICY_PHRASES)
        if "[" in text:
            text = _CITATION.sub("", text)
        kept = [
            line for line in (raw.strip() for raw in text.split("\n")) if self._keep_line(line, check_words)
        ]
        removed = text.count("\n") + 1 - len(kept)
        body = "\n".join(kept)
        if len(_SENTENCE_END.findall(body)) < self.min_sentences:
            return "too few sentences"
        if not removed and body == doc.text:
            return doc
        self.stats.tallies["lines removed"] += removed
        return Document(doc.id, body, doc.source, doc.meta)

    def _keep_line(self, line: str, check_words: bool) -> bool:
        if not line.endswith(TERMINAL_PUNCTUATION) or line.endswith(ELLIPSIS):
            return False
        if len(line.split(None, self.min_words_per_line)) < self.min_words_per_line:
            return False
        if len(line) > self.max_word_length and any(len(w) > self.max_word_length for w in line.split()):
            return False
        if check_words:
            lower = line.lower()
            if "javascript" in lower or any(p in lower for p in POLICY_PHRASES):
                return False
        return True


def _badwords_pattern(path: str) -> re.Pattern:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"bad-words list {file} not found; give a text file with one word or phrase per line")
    words = [w.strip().lower() for w in file.read_text("utf-8").splitlines() if w.strip()]
    # Whole words only, as C4's filter (so "Scunthorpe" stays).
    return re.compile(
        r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")(?!\w)"
    )


class CodeQuality(Stage):
    """The GitHub heuristics (as RedPajama's reproduction of them): files with a line longer than
    `max_line_length`, a mean line length over `max_mean_line_length`, or fewer than
    `min_alphanumeric` of their characters alphanumeric are dropped (generated, minified or data files)."""

    name = "code_quality"

    def __init__(
        self, max_line_length: int = 1000, max_mean_line_length: float = 100.0, min_alphanumeric: float = 0.25
    ) -> None:
        super().__init__()
        self.max_line_length = max_line_length
        self.max_mean_line_length = max_mean_line_length
        self.min_alphanumeric = min_alphanumeric

    def apply(self, doc: Document) -> Document | str:
        text = doc.text
        if not text.strip():
            return "empty file"
        lengths = [len(line) for line in text.splitlines()]
        if max(lengths) > self.max_line_length:
            return "line too long"
        if sum(lengths) / len(lengths) > self.max_mean_line_length:
            return "mean line too long"
        alnum = len(text) - len(_ALNUM_RUN.sub("", text))  # one regex pass, not a Python loop per character
        if alnum / len(text) < self.min_alphanumeric:
            return "too few alphanumeric characters"
        return doc


# A comment block at the top of a file: line comments (#, //, --, ;) or one /* ... */ block. A `#` followed
# by a letter is a C preprocessor line (#include), not a comment.
_HEADER = re.compile(
    r"\A(?P<shebang>#![^\n]*\n)?(?P<block>(?:[ \t]*(?:#(?![A-Za-z])|//|--|;)[^\n]*\n|[ \t]*\n)+"
    r"|[ \t]*/\*.*?\*/[ \t]*\n)",
    re.DOTALL,
)
_LICENSE_WORDS = re.compile(
    r"copyright|licen[cs]e|spdx-license-identifier|all rights reserved", re.IGNORECASE
)


class LicenseHeaderStrip(Stage):
    """Removes a file's leading comment block when it is a license or copyright notice (the boilerplate
    repeated in every file of a project); a shebang line stays."""

    name = "license_header"

    def apply(self, doc: Document) -> Document | str:
        m = _HEADER.match(doc.text)
        if m is None or not _LICENSE_WORDS.search(m.group("block")):
            return doc
        self.stats.tallies["headers removed"] += 1
        text = (m.group("shebang") or "") + doc.text[m.end() :].lstrip("\n")
        if not text.strip():
            return "only a license header"
        return Document(doc.id, text, doc.source, doc.meta)
