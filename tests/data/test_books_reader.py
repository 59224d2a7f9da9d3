"""The books reader: one book per text file, Project Gutenberg's header and footer cut."""

from __future__ import annotations

import gzip

from llamafoundry.data.sources.books import BooksReader

GUTENBERG = """\ufeffThe Project Gutenberg eBook of Pride and Prejudice\r
\r
This ebook is for the use of anyone anywhere in the United States and\r
most other parts of the world at no cost and with almost no restrictions\r
whatsoever.\r
\r
Title: Pride and Prejudice\r
\r
Author: Jane Austen\r
\r
*** START OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***\r
\r
Chapter I.\r
\r
It is a truth universally acknowledged, that a single man in possession\r
of a good fortune, must be in want of a wife.\r
\r
*** END OF THE PROJECT GUTENBERG EBOOK PRIDE AND PREJUDICE ***\r
\r
Updated editions will replace the previous one--the old editions will\r
be renamed.\r
"""


def test_gutenberg_book_without_its_license_header_and_footer(tmp_path):
    (tmp_path / "gutenberg").mkdir()
    (tmp_path / "gutenberg" / "1342-0.txt").write_bytes(GUTENBERG.encode("utf-8"))
    (tmp_path / "gutenberg" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    reader = BooksReader()
    docs = list(reader.read(tmp_path))
    assert len(docs) == 1
    assert docs[0].text == (
        "Chapter I.\n\nIt is a truth universally acknowledged, that a single man in possession\n"
        "of a good fortune, must be in want of a wife."
    )
    assert docs[0].id == "books:gutenberg/1342-0"
    assert docs[0].meta == {"title": "Pride and Prejudice", "path": "gutenberg/1342-0.txt"}


def test_plain_and_compressed_books_and_bad_files(tmp_path, shared_data):
    shakespeare = (shared_data / "corpora/tinyshakespeare/input.txt").read_text()
    (tmp_path / "shakespeare.txt.gz").write_bytes(gzip.compress(shakespeare.encode()))
    (tmp_path / "latin1.txt").write_bytes("Ros\xe9 et Colas".encode("latin-1"))
    data = gzip.compress(("A long book. " * 50000).encode())
    (tmp_path / "cut.txt.gz").write_bytes(data[: len(data) // 2])
    reader = BooksReader()
    docs = list(reader.read(tmp_path))
    assert [d.id for d in docs] == ["books:shakespeare"]
    assert docs[0].text == shakespeare.strip()
    assert docs[0].meta["title"] == "shakespeare"
    assert reader.stats.dropped == {"invalid UTF-8": 1, "truncated or corrupt file": 1}
