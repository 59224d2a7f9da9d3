"""CommonCrawl (Table 1: 67%): WET files (the extracted text CCNet starts from) and WARC files (HTML
responses, turned into text with resiliparse). Plain or gzip, read with warcio as a stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS, open_bytes, truncation


class CommonCrawlReader(Reader):
    """One document per WET `conversion` record or WARC `response` record with an HTML or text body.

    The id is the record's WARC-Record-ID (unique in CommonCrawl); `meta` has the URL, crawl date, the
    file name and, for WET, CommonCrawl's own language guess.
    """

    source = "commoncrawl"

    def __init__(self, min_chars: int = 1, source: str | None = None) -> None:
        super().__init__(source)
        self.min_chars = min_chars
        self._stream = None  # the archive being read

    def documents(self, path: Path) -> Iterator[Document]:
        # warcio takes any read error for the end of the archive, so a cut file is noticed here.
        with open_bytes(path) as stream:
            self._stream = stream
            records = iter(ArchiveIterator(stream))
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - warcio raises whatever it hits on bytes that are no WARC
                    self.skip("truncated or corrupt archive", f"{path}: {type(exc).__name__}: {exc}")
                    return
                doc = self._document(record, path)
                if doc is not None:
                    yield doc
            error = truncation(stream)
            if error is not None:
                self.skip("truncated or corrupt archive", f"{path}: {error}")

    def _document(self, record, path: Path) -> Document | None:
        kind = record.rec_type
        if kind not in ("conversion", "response"):
            return None  # warcinfo, request, metadata: no page text
        headers = record.rec_headers
        record_id = headers.get_header("WARC-Record-ID") or ""
        where = f"{path.name} {record_id}"
        try:
            body = record.content_stream().read()
        except TRUNCATED_ERRORS as exc:
            self.skip("truncated record", f"{where}: {exc}")
            return None
        if not body.strip():
            self.skip("record without a body", where)
            return None
        if kind == "conversion" and record.length is not None and len(body) < int(record.length):
            if truncation(self._stream) is None:  # a cut file is counted once, at its end
                self.skip("truncated record", where)
            return None
        if kind == "conversion":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                self.skip("invalid UTF-8", where)
                return None
        else:
            text = self._html_text(record, body, where)
            if text is None:
                return None
        if len(text.strip()) < self.min_chars:
            self.skip("no text", where)
            return None
        meta = {
            "url": headers.get_header("WARC-Target-URI"),
            "date": headers.get_header("WARC-Date"),
            "warc_file": path.name,
        }
        language = headers.get_header("WARC-Identified-Content-Language")
        if language:
            meta["cc_language"] = language
        return Document(record_id, text, self.source, meta)

    def _html_text(self, record, body: bytes, where: str) -> str | None:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        http = record.http_headers
        content_type = (http.get_header("Content-Type") if http else None) or "text/html"
        if not content_type.startswith(("text/html", "application/xhtml", "text/plain")):
            self.skip("not an HTML or text response", where)
            return None
        html = bytes_to_str(body, detect_encoding(body))
        if content_type.startswith("text/plain"):
            return html
        # Main content only: navigation and footers are the boilerplate CCNet's line dedup would remove.
        return extract_plain_text(html, main_content=True, alt_texts=False, links=False)
