"""StackExchange (Table 1: 2.0%): a site's `Posts.xml` from the dump, one document per question with its
answers. Sec. 2.1: "We removed the HTML tags from text and sorted the answers by score (from highest to
lowest)."

Answers can come anywhere after their question in Posts.xml, so the rows first go to a temporary SQLite
table (a dump can hold tens of GB), then each question is written with its answers, best first.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS, open_bytes, strip_suffixes, truncation

QUESTION, ANSWER = "1", "2"


def html_to_text(html: str) -> str:
    """Text of a post body: tags gone, paragraphs and code blocks kept as lines (resiliparse)."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, preserve_formatting=True, main_content=False, links=False).strip()


def parse_tags(tags: str) -> list[str]:
    """`<python><regex>` (older dumps) or `|python|regex|` (newer dumps) -> ["python", "regex"]."""
    if tags.startswith("<"):
        return re.findall(r"<([^<>]+)>", tags)
    return [t for t in tags.split("|") if t]


class StackExchangeReader(Reader):
    """The input is a `Posts.xml` (or .bz2/.gz/.zst/.xz) or a site folder holding one; the site's name is
    `site` or that folder's name. The id is `stackexchange:<site>:<question id>`."""

    source = "stackexchange"

    def __init__(self, site: str | None = None, min_answers: int = 0, source: str | None = None) -> None:
        super().__init__(source)
        self.site = site
        self.min_answers = min_answers

    def documents(self, path: Path) -> Iterator[Document]:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if strip_suffixes(p.name).lower() == "posts.xml")
            if not found:
                self.skip("no Posts.xml in the folder", str(path))
                return
            path = found[0]
        site = self.site or path.parent.name
        with tempfile.TemporaryDirectory(prefix="llamafoundry-se-") as tmp:
            db = sqlite3.connect(Path(tmp) / "posts.sqlite")
            try:
                self._load(path, db)
                yield from self._questions(db, site)
            finally:
                db.close()

    def _load(self, path: Path, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, title TEXT, body TEXT, score INTEGER, tags TEXT)")
        db.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, parent INTEGER, body TEXT, score INTEGER)")
        rows = 0
        with open_bytes(path) as stream:
            try:
                for _, elem in ET.iterparse(stream, events=("end",)):
                    if elem.tag == "row":
                        rows += 1
                        self._row(elem.attrib, db, f"{path.name} row {rows}")
                        elem.clear()
            except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown declared encoding
                cut = truncation(stream)  # a cut compressed file ends the XML early: say which it was
                reason = "truncated or corrupt file" if cut else "truncated or malformed XML"
                self.skip(reason, f"{path} after row {rows}: {exc}")
            except TRUNCATED_ERRORS as exc:
                self.skip("truncated or corrupt file", f"{path} after row {rows}: {exc}")
        db.execute("CREATE INDEX a_parent ON a (parent, score)")

    def _row(self, row: dict[str, str], db: sqlite3.Connection, where: str) -> None:
        kind = row.get("PostTypeId")
        if kind not in (QUESTION, ANSWER):
            return  # wiki, tag excerpts, moderator nominations
        try:
            numbers = [int(row["Id"]), int(row.get("Score", "0")), int(row.get("ParentId", "0"))]
        except (KeyError, ValueError):
            numbers = []
        if not numbers or not all(-(2**63) <= n < 2**63 for n in numbers):  # SQLite's integers
            self.skip("post without a numeric Id/Score/ParentId", where)
            return
        post_id, score, parent = numbers
        body = row.get("Body", "")
        if kind == QUESTION:
            db.execute(
                "INSERT OR REPLACE INTO q VALUES (?, ?, ?, ?, ?)",
                (post_id, row.get("Title", ""), body, score, row.get("Tags", "")),
            )
        elif "ParentId" in row:
            db.execute("INSERT OR REPLACE INTO a VALUES (?, ?, ?, ?)", (post_id, parent, body, score))

    def _questions(self, db: sqlite3.Connection, site: str) -> Iterator[Document]:
        questions = db.execute("SELECT id, title, body, score, tags FROM q ORDER BY id")
        for qid, title, body, score, tags in questions:
            answers = db.execute(
                "SELECT id, body FROM a WHERE parent = ? ORDER BY score DESC, id", (qid,)
            ).fetchall()
            if len(answers) < self.min_answers:
                continue
            parts = [title.strip(), html_to_text(body)] + [html_to_text(b) for _, b in answers]
            text = "\n\n".join(p for p in parts if p)
            meta = {
                "site": site,
                "question_id": qid,
                "url": f"https://{site}/questions/{qid}",
                "score": score,
                "tags": parse_tags(tags or ""),
                "answer_ids": [a for a, _ in answers],
            }
            yield Document(f"stackexchange:{site}:{qid}", text, self.source, meta)
