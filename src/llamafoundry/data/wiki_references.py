"""The training data of the Wikipedia-reference classifier (Sec. 2.1: "pages used as references in
Wikipedia v.s. randomly sampled pages"), from public dumps alone.

`cited_urls` finds the external URLs an article cites: the `url` of its citation templates
(`{{cite web}}`, `{{cite news}}`, ..., `{{citation}}`) and the links written directly in its `<ref>` tags.
`collect_pages` then reads CommonCrawl WET/WARC files: a page whose URL is cited is a positive (once per
URL), the others are the pool that the negatives are sampled from (a seeded reservoir sample). URLs match
after `url_key`: scheme, `www.`, letter case of the host, default port, percent-encoding of the path, a
trailing slash and the fragment make no difference.
"""

from __future__ import annotations

import json
import os
import random
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.commoncrawl import CommonCrawlReader
from llamafoundry.data.sources.wikipedia import WikipediaReader, _local
from llamafoundry.fileio import output_file

_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_key(url: str) -> str | None:
    """The form two URLs of the same page share (see the module docstring); None if it is no http(s)
    URL with a host."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a malformed host or port
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.removeprefix("www.")
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = urllib.parse.unquote(parts.path).rstrip("/")
    return host + path + (f"?{parts.query}" if parts.query else "")


def is_citation_template(name: str) -> bool:
    """`{{cite ...}}` (cite web, cite news, cite journal, ...) and its older sibling `{{citation}}`."""
    name = name.strip().lower()
    return name.startswith("cite") or name == "citation"


def cited_urls(wikitext: str) -> dict[str, str]:
    """The http(s) URLs an article cites: url_key -> the URL as first cited, in order of appearance."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    found = [
        # The first word: some url values run on into a note ("http://... online").
        next(iter(template.get("url").value.strip_code().split()), "")
        for template in code.filter_templates(recursive=True)
        if is_citation_template(str(template.name)) and template.has("url")
    ]
    for tag in code.filter_tags(recursive=True):
        if str(tag.tag).strip().lower() == "ref" and tag.contents is not None:
            # Top level only: a link inside a template in the ref is a template parameter (archive-url).
            found += [str(link.url).strip() for link in tag.contents.filter_external_links(recursive=False)]
    urls: dict[str, str] = {}
    for url in found:
        key = url_key(url)
        if key is not None:
            urls.setdefault(key, url)
    return urls


class WikitextReader(WikipediaReader):
    """A Wikipedia dump's articles with their raw wikitext as the text (the references are in the markup
    the Wikipedia reader removes)."""

    def _page(self, page, site: dict, path: Path) -> Document | None:
        fields = {_local(child.tag): child for child in page}
        ns = (fields["ns"].text or "").strip() if "ns" in fields else "0"
        if ns not in self.namespaces or "redirect" in fields or "revision" not in fields:
            return None
        revision = {_local(child.tag): child for child in fields["revision"]}
        wikitext = revision["text"].text if "text" in revision else None
        if not wikitext:
            return None
        title = (fields["title"].text or "").strip() if "title" in fields else ""
        return Document(f"{site['dbname']}:{title}", wikitext, self.source, {"title": title})


def dump_cited_urls(dumps: Iterable[str | os.PathLike]) -> dict[str, str]:
    """`cited_urls` over every article of the dumps."""
    reader = WikitextReader()
    urls: dict[str, str] = {}
    for dump in dumps:
        for doc in reader.read(dump):
            for key, url in cited_urls(doc.text).items():
                urls.setdefault(key, url)
    return urls


class PageCollector:
    """Reads crawl files for the pages at `cited` URLs (url_key -> URL) and keeps a uniform sample
    (seeded) of `negatives` pages that no article cites."""

    def __init__(self, cited: dict[str, str], negatives: int, seed: int = 0) -> None:
        self.cited = cited
        self.size = negatives
        self.rng = random.Random(seed)
        self.negatives: list[Document] = []
        self.pages = 0  # crawl pages read
        self.uncited = 0  # of those, pages at no cited URL: the pool the negatives come from
        self.found: set[str] = set()  # url_keys of the positives so far

    def positives(self, crawl: Iterable[str | os.PathLike]) -> Iterator[Document]:
        """The pages at cited URLs (the first page of each URL); `negatives` is complete afterwards."""
        reader = CommonCrawlReader()
        for path in crawl:
            for doc in reader.read(path):
                self.pages += 1
                key = url_key(doc.meta.get("url") or "")
                if key not in self.cited:
                    self._offer(doc)
                elif key not in self.found:
                    self.found.add(key)
                    yield doc

    def _offer(self, doc: Document) -> None:
        """Reservoir sampling (Algorithm R): every uncited page ends up in the sample equally likely."""
        self.uncited += 1
        if len(self.negatives) < self.size:
            self.negatives.append(doc)
        else:
            slot = self.rng.randrange(self.uncited)
            if slot < self.size:
                self.negatives[slot] = doc


def write_pages(
    collector: PageCollector,
    crawl: list[Path],
    output: Path,
    negative_output: Path,
    overwrite: bool = False,
) -> None:
    """Write the positives to `output` and the sampled negatives to `negative_output`, as JSONL
    (`text`, `url`, `id`) that `data train-classifier` reads; both files appear only when both are done."""
    with (
        output_file(output, overwrite=overwrite, recognise=_is_pages) as pos_tmp,
        output_file(negative_output, overwrite=overwrite, recognise=_is_pages) as neg_tmp,
    ):
        with open(pos_tmp, "w", encoding="utf-8") as f:
            f.writelines(map(_record, collector.positives(crawl)))
        neg_tmp.write_text("".join(map(_record, collector.negatives)), encoding="utf-8")


def write_url_list(urls: Iterable[str], output: Path, overwrite: bool = False) -> None:
    """The cited URLs, one a line (what a user takes to a crawl index)."""
    with output_file(output, overwrite=overwrite, recognise=_is_url_list) as tmp:
        tmp.write_text("".join(f"{url}\n" for url in urls), encoding="utf-8")


def _record(doc: Document) -> str:
    return json.dumps({"text": doc.text, "url": doc.meta.get("url"), "id": doc.id}, ensure_ascii=False) + "\n"


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip()


def _is_pages(path: Path) -> bool:
    line = _first_line(path)
    try:
        record = json.loads(line) if line else {}
    except ValueError:
        return False
    return isinstance(record, dict) and set(record) <= {"text", "url", "id"}


def _is_url_list(path: Path) -> bool:
    line = _first_line(path)
    return not line or line.startswith(("http://", "https://"))
