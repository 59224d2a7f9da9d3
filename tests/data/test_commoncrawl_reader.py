"""The CommonCrawl reader on a real WET file and on WARC files written with warcio."""

from __future__ import annotations

import gzip
import io

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from llamafoundry.data.sources.commoncrawl import CommonCrawlReader

WET = "corpora/commoncrawl_wet_sample/whirlwind.warc.wet.gz"


def _conversion_body(raw: bytes) -> bytes:
    """The text block of the one conversion record, cut out of the WARC by hand (headers, blank line,
    Content-Length bytes)."""
    start = raw.index(b"WARC-Type: conversion")
    header_end = raw.index(b"\r\n\r\n", start) + 4
    headers = raw[start:header_end].decode()
    length = int(next(h for h in headers.split("\r\n") if h.startswith("Content-Length:")).split(":")[1])
    return raw[header_end : header_end + length]


def test_real_wet_file_gives_its_conversion_record(shared_data):
    path = shared_data / WET
    reader = CommonCrawlReader()
    docs = list(reader.read(path))
    assert len(docs) == 1  # the warcinfo record is no document
    doc = docs[0]
    assert doc.id == "<urn:uuid:ba729a40-ff84-4085-8d48-0a5b2ee0c42d>"
    assert doc.source == "commoncrawl"
    assert doc.meta["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.meta["date"] == "2024-05-18T01:58:10Z"
    assert doc.meta["cc_language"] == "spa"
    assert doc.text == _conversion_body(gzip.decompress(path.read_bytes())).decode("utf-8")
    assert doc.text.startswith("Escopete - Biquipedia, a enciclopedia libre\nIr al contenido\n")
    assert reader.stats.docs_out == 1 and not reader.stats.dropped


def _write_warc(path, records):
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for kind, uri, body, content_type in records:
            http = None
            if kind == "response":
                http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            record = writer.create_warc_record(
                uri,
                kind,
                payload=io.BytesIO(body),
                length=len(body),
                http_headers=http,
                warc_content_type="text/plain" if kind == "conversion" else None,
            )
            writer.write_record(record)


HTML = (
    b"<html><head><title>T</title></head><body><nav><a href='/'>Home</a></nav><main><article>"
    b"<h1>Rivers</h1><p>The Ebro is the longest river entirely in Spain, flowing into the Mediterranean.</p>"
    b"<p>It drains a large basin in the north-east of the country.</p></article></main></body></html>"
)


def test_warc_records_conversion_response_and_malformed_ones(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    _write_warc(
        path,
        [
            ("conversion", "https://a.example/1", b"First page.\nSecond line of it.", None),
            ("conversion", "https://a.example/empty", b"", None),  # a record without a body
            ("conversion", "https://a.example/latin1", "caf\xe9 cr\xe8me".encode("latin-1"), None),
            ("response", "https://b.example/rivers", HTML, "text/html; charset=utf-8"),
            ("response", "https://b.example/logo.png", b"\x89PNG\r\n\x1a\n\0\0", "image/png"),
            ("conversion", "https://a.example/2", b"Last page.", None),
        ],
    )
    reader = CommonCrawlReader()
    docs = list(reader.read(path))
    assert [d.meta["url"] for d in docs] == [
        "https://a.example/1",
        "https://b.example/rivers",
        "https://a.example/2",
    ]
    assert docs[0].text == "First page.\nSecond line of it."
    assert "The Ebro is the longest river entirely in Spain" in docs[1].text
    assert "Home" not in docs[1].text  # navigation is not main content
    assert docs[2].text == "Last page."
    assert all(d.id.startswith("<urn:uuid:") for d in docs)
    assert reader.stats.dropped == {
        "record without a body": 1,
        "invalid UTF-8": 1,
        "not an HTML or text response": 1,
    }
    assert reader.stats.examples["record without a body"].startswith("crawl.warc.gz <urn:uuid:")


def test_truncated_gzip_keeps_the_records_before_the_cut(tmp_path):
    path = tmp_path / "cut.warc.wet.gz"
    pages = [f"Page {i} says something about rivers and hills.".encode() for i in range(5)]
    _write_warc(path, [("conversion", f"https://c.example/{i}", p, None) for i, p in enumerate(pages)])
    data = path.read_bytes()
    # Cut inside the last record's gzip member (each WARC record is its own member).
    last_member = data.rindex(b"\x1f\x8b\x08")
    path.write_bytes(data[: last_member + 40])
    reader = CommonCrawlReader()
    docs = list(reader.read(path))
    assert [d.text for d in docs] == [p.decode() for p in pages[:4]]
    assert sum(reader.stats.dropped.values()) == 1
    assert set(reader.stats.dropped) <= {"truncated or corrupt archive", "truncated record"}
