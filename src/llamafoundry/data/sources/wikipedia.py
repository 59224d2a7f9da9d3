"""Wikipedia (Table 1: 4.5%): MediaWiki XML dumps (`*-pages-articles.xml.bz2`), streamed page by page.

Sec. 2.1: "We process the data to remove hyperlinks, comments and other formatting boilerplate." The
wikitext goes through mwparserfromhell: templates, comments, references, tables, file/category and
interlanguage links are removed, links keep their visible text, bold/italic markup goes, and the
trailing link-list sections (References, External links, ...) are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS, open_bytes, truncation

# Tags whose content is no prose.
DROP_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "timeline",
    "imagemap",
    "score",
    "math",
    "chem",
    "syntaxhighlight",
    "source",
    "templatedata",
    "nowiki",
    "div",
    "noinclude",
}
# Sections that are lists of links or citations (English titles; other languages keep theirs).
DROP_SECTIONS = {
    "references",
    "external links",
    "see also",
    "further reading",
    "notes",
    "bibliography",
    "sources",
    "notes and references",
    "footnotes",
    "citations",
}
# Namespaces whose links are media or metadata, not text: File (6), Category (14), Media (-2).
LINK_NAMESPACES = {"-2", "6", "14"}
_INTERLANGUAGE = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:")
_BLANK_LINES = re.compile(r"\n{3,}")
# Bold/italic quote runs ('' ''), left as text: parsing them as tags makes mwparserfromhell give
# up on whole pages (then refs and links stay raw).
_QUOTES = re.compile(r"'{5}|'{3}|'{2}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def wikitext_to_text(wikitext: str, drop_link_prefixes: set[str]) -> str:
    """Plain prose from wikitext (see the module docstring for what is removed)."""
    import mwparserfromhell

    parts: list[str] = []
    skip_level = 0  # inside a dropped section of this heading level (0: not skipping)
    for node in mwparserfromhell.parse(wikitext, skip_style_tags=True).nodes:
        if isinstance(node, mwparserfromhell.nodes.Heading):
            title = _render(node.title.nodes, drop_link_prefixes).strip()
            if skip_level and node.level > skip_level:
                continue
            skip_level = node.level if title.lower() in DROP_SECTIONS else 0
            if not skip_level:
                parts.append(f"\n{title}\n")
        elif not skip_level:
            parts.append(_render([node], drop_link_prefixes))
    lines = [line.strip() for line in "".join(parts).replace("\xa0", " ").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _render(nodes, drop_link_prefixes: set[str]) -> str:
    """The visible text of parsed wikitext nodes, in one pass (removing nodes one by one is quadratic)."""
    from mwparserfromhell import nodes as n

    out = []
    for node in nodes:
        if isinstance(node, n.Text):
            out.append(_QUOTES.sub("", node.value))
        elif isinstance(node, n.Wikilink):
            title = str(node.title).strip()
            prefix = title.lstrip(":").split(":", 1)[0].strip().lower() if ":" in title else ""
            if prefix in drop_link_prefixes or _INTERLANGUAGE.match(title):
                continue
            out.append(_render((node.text or node.title).nodes, drop_link_prefixes))
        elif isinstance(node, n.ExternalLink):
            if node.title is not None:
                out.append(_render(node.title.nodes, drop_link_prefixes))
        elif isinstance(node, n.Tag):
            tag = str(node.tag).strip().lower()
            if tag in ("br", "p"):
                out.append("\n")
            if tag not in DROP_TAGS and node.contents is not None:
                out.append(_render(node.contents.nodes, drop_link_prefixes))
        elif isinstance(node, n.HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, n.Heading):
            out.append("\n" + _render(node.title.nodes, drop_link_prefixes).strip() + "\n")
        # Templates, comments, template arguments: no prose.
    return "".join(out)


class WikipediaReader(Reader):
    """One document per article (namespace 0, no redirects) of a MediaWiki XML dump (.xml, .bz2, .gz).

    The id is `<dbname>:<page id>`; `meta` has the title, URL, revision id and the wiki's language
    (from the dump's `dbname`, e.g. `frwiki` -> `fr`).
    """

    source = "wikipedia"

    def __init__(
        self, namespaces: list[int] | None = None, min_chars: int = 1, source: str | None = None
    ) -> None:
        super().__init__(source)
        self.namespaces = {str(n) for n in (namespaces or [0])}
        self.min_chars = min_chars

    def documents(self, path: Path) -> Iterator[Document]:
        site = {"dbname": path.name, "base": "", "link_prefixes": {"file", "image", "category", "media"}}
        with open_bytes(path) as stream:
            events = ET.iterparse(stream, events=("start", "end"))
            root = None
            pages = 0
            try:
                for event, elem in events:
                    if root is None:
                        root = elem
                    if event != "end":
                        continue
                    tag = _local(elem.tag)
                    if tag == "siteinfo":
                        self._site(elem, site)
                        root.clear()
                    elif tag == "page":
                        pages += 1
                        doc = self._page(elem, site, path)
                        root.clear()  # keep memory flat over a many-GB dump
                        if doc is not None:
                            yield doc
            except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown declared encoding
                cut = truncation(stream)  # a cut compressed file ends the XML early: say which it was
                reason = "truncated or corrupt file" if cut else "truncated or malformed XML"
                self.skip(reason, f"{path} after page {pages}: {exc}")
            except TRUNCATED_ERRORS as exc:
                self.skip("truncated or corrupt file", f"{path} after page {pages}: {exc}")

    def _site(self, siteinfo: ET.Element, site: dict) -> None:
        for child in siteinfo:
            tag = _local(child.tag)
            if tag in ("dbname", "base"):
                site[tag] = (child.text or "").strip()
            elif tag == "namespaces":
                for ns in child:
                    if ns.get("key") in LINK_NAMESPACES and ns.text:
                        site["link_prefixes"].add(ns.text.strip().lower())

    def _page(self, page: ET.Element, site: dict, path: Path) -> Document | None:
        fields = {_local(child.tag): child for child in page}
        ns = (fields["ns"].text or "").strip() if "ns" in fields else "0"
        if ns not in self.namespaces or "redirect" in fields or "revision" not in fields:
            return None
        revision = {_local(child.tag): child for child in fields["revision"]}
        wikitext = revision["text"].text if "text" in revision else None
        title = (fields["title"].text or "").strip() if "title" in fields else ""
        page_id = (fields["id"].text or "").strip() if "id" in fields else title
        if not wikitext:
            self.skip("page without text", f"{path.name} {title!r}")
            return None
        text = wikitext_to_text(wikitext, site["link_prefixes"])
        if len(text) < self.min_chars:
            self.skip("no prose after cleaning", f"{path.name} {title!r}")
            return None
        dbname = site["dbname"]
        base = site["base"].rsplit("/wiki/", 1)[0]
        meta = {
            "title": title,
            "url": f"{base}/wiki/{title.replace(' ', '_')}" if base else None,
            "revision_id": (revision["id"].text or "").strip() if "id" in revision else None,
            "language": dbname[:-4] if dbname.endswith("wiki") else None,
        }
        return Document(f"{dbname}:{page_id}", text, self.source, meta)
