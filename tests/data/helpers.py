"""Crawl-like inputs built from real text: WikiText articles as web pages with shared boilerplate
(plain functions, imported where used; the `articles` fixture is in conftest.py)."""

from __future__ import annotations

import io
import re

from warcio.warcwriter import WARCWriter

HEADER = ["Home | News | Sport | Weather | Contact", "Sign in to your account"]
FOOTER = ["© 2020 Example Media Group. All rights reserved.", "Follow us on social media."]
FRENCH = (
    "Le Rhône est un fleuve européen qui prend sa source en Suisse, dans le glacier du Rhône.\n"
    "Il traverse le lac Léman puis entre en France, où il reçoit la Saône à Lyon.\n"
    "Son delta forme la Camargue, une vaste zone humide protégée au bord de la Méditerranée."
)


def detokenize(line: str) -> str:
    """WikiText's tokenized punctuation (" , ", " @-@ ") back to plain text."""
    line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    return re.sub(r" ([,.;:!?)'])", r"\1", line).replace("( ", "(").strip()


def crawl_pages(articles: list[list[str]], count: int) -> list[tuple[str, str]]:
    """(url, text) pages: an article's paragraphs between a shared header and footer."""
    pages = []
    for i, article in enumerate(articles[:count]):
        url = f"https://news.example.com/{i}/{article[0].replace(' ', '_')}"
        pages.append((url, "\n".join(HEADER + article + FOOTER)))
    return pages


def write_wet(path, pages: list[tuple[str, str | bytes]]) -> None:
    """A gzip WET file: one `conversion` record per page, written with warcio."""
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, text in pages:
            body = text if isinstance(text, bytes) else text.encode("utf-8")
            record = writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(body), length=len(body), warc_content_type="text/plain"
            )
            writer.write_record(record)
