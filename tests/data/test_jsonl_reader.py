"""The C4 / JSON Lines reader: plain, gzip and zstandard files, and malformed lines."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import zstandard

from llamafoundry.data.sources.jsonl import JsonlReader

RECORDS = [
    {
        "text": "Beginners BBQ Class Taking Place in Missoula!",
        "timestamp": "2019-04-25T12:57:54Z",
        "url": "https://klyq.com/beginners-bbq-class-taking-place-in-missoula/",
    },
    {
        "text": "Discussion in 'Mac OS X Lion (10.7)' started by axboi87.",
        "timestamp": "2019-04-21T10:07:13Z",
        "url": "https://forums.macrumors.com/threads/restore-from-larger-disk-to-smaller-disk.1311975/",
    },
]


def _lines() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_c4_records_in_every_compression(tmp_path, suffix):
    path = tmp_path / f"c4-train.00000-of-01024.json{suffix}"
    data = _lines()
    if suffix == ".gz":
        data = gzip.compress(data)
    elif suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    docs = list(JsonlReader().read(path))
    assert [d.text for d in docs] == [r["text"] for r in RECORDS]
    assert [d.id for d in docs] == ["c4-train.00000-of-01024.json:1", "c4-train.00000-of-01024.json:2"]
    assert docs[0].meta == {"timestamp": RECORDS[0]["timestamp"], "url": RECORDS[0]["url"]}
    assert docs[0].source == "c4"


def test_bad_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        json.dumps({"id": "a", "text": "good one"}).encode()
        + b"\n"
        + b'{"text": "caf\xe9"}\n'  # Latin-1 byte: invalid UTF-8
        + b"{not json\n"
        + b'{"title": "no text field"}\n'
        + b"\n"
        + json.dumps({"id": "b", "text": "good two"}).encode()
        + b"\n"
    )
    reader = JsonlReader()
    docs = list(reader.read(path))
    assert [(d.id, d.text) for d in docs] == [("a", "good one"), ("b", "good two")]
    assert reader.stats.dropped == {"invalid UTF-8": 1, "invalid JSON": 1, "no 'text' string": 1}
    assert reader.stats.examples["invalid JSON"] == f"{path}:3"


def test_truncated_gzip_keeps_every_complete_line(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    records = [{"text": f"document number {i} " * 20} for i in range(2000)]
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    path.write_bytes(data[: len(data) * 3 // 4])
    reader = JsonlReader()
    docs = list(reader.read(path))
    assert 0 < len(docs) < len(records)
    assert [d.text for d in docs] == [r["text"] for r in records[: len(docs)]]  # in order, none lost or torn
    # Every line fully inside the readable part of the stream came out.
    readable = gzip.GzipFile(fileobj=io.BytesIO(data[: len(data) * 3 // 4]))
    complete = 0
    try:
        for line in readable:
            complete += line.endswith(b"\n")
    except EOFError:
        pass
    assert len(docs) >= complete
    assert reader.stats.dropped == {"truncated or corrupt file": 1}
