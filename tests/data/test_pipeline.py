"""Recipe runs: shards and report, resuming, crashes, malformed input, the process pool."""

from __future__ import annotations

import gzip
import json
import os
import textwrap

import pytest
import zstandard

from llamafoundry.data.filters.quality import C4Quality
from llamafoundry.data.pipeline import run_recipe
from llamafoundry.data.recipe import load_recipe
from llamafoundry.data.report import to_markdown
from llamafoundry.data.stage import StageStats
from llamafoundry.data.textio import read_shard
from tests.data.helpers import FRENCH, crawl_pages, write_wet

RECIPE = """
[run]
output = "{out}"

[sources.commoncrawl]
inputs = ["{raw}/cc/*.warc.wet.gz"]
group_size = 2

[[sources.commoncrawl.stages]]
stage = "line_dedup"

[[sources.commoncrawl.stages]]
stage = "langid"
languages = ["en"]

[[sources.commoncrawl.stages]]
stage = "c4_quality"
min_sentences = 3

[sources.c4]
reader = "jsonl"
inputs = ["{raw}/c4/*.json.gz"]

[[sources.c4.stages]]
stage = "exact_dedup"

[mixture.commoncrawl]
weight = 0.8

[mixture.c4]
weight = 0.2
"""


@pytest.fixture
def crawl(tmp_path, articles):
    raw = tmp_path / "raw"
    (raw / "cc").mkdir(parents=True)
    (raw / "c4").mkdir()
    pages = crawl_pages(articles, 12)
    write_wet(
        raw / "cc" / "CC-MAIN-00000.warc.wet.gz", pages[:4] + [("https://fr.example.com/rhone", FRENCH)]
    )
    write_wet(raw / "cc" / "CC-MAIN-00001.warc.wet.gz", pages[4:8] + [("https://empty.example.com/", b"")])
    write_wet(raw / "cc" / "CC-MAIN-00002.warc.wet.gz", pages[8:])
    records = [{"text": p[1], "url": p[0]} for p in pages[:6]] + [{"text": pages[0][1], "url": "dup"}]
    (raw / "c4" / "c4-00000.json.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())
    )
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(out=tmp_path / "out", raw=raw))
    return recipe


def _shards(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.jsonl.zst"))}


def test_run_writes_shards_and_report(crawl, tmp_path):
    recipe = load_recipe(crawl)
    report = run_recipe(recipe, workers=1, show_progress=False)
    out = tmp_path / "out"
    assert sorted(_shards(out)) == [
        "c4/c4-00000.json.jsonl.zst",
        "commoncrawl/CC-MAIN-00000.warc.wet.jsonl.zst",
        "commoncrawl/CC-MAIN-00001.warc.wet.jsonl.zst",
        "commoncrawl/CC-MAIN-00002.warc.wet.jsonl.zst",
    ]
    raw_bytes = (
        zstandard.ZstdDecompressor()
        .stream_reader((out / "commoncrawl/CC-MAIN-00000.warc.wet.jsonl.zst").read_bytes())
        .read()
    )
    record = json.loads(raw_bytes.split(b"\n")[0])
    assert set(record) == {"id", "text", "source", "meta"} and record["id"].startswith("<urn:uuid:")
    first = list(read_shard(out / "commoncrawl/CC-MAIN-00000.warc.wet.jsonl.zst"))
    second = list(read_shard(out / "commoncrawl/CC-MAIN-00001.warc.wet.jsonl.zst"))
    third = list(read_shard(out / "commoncrawl/CC-MAIN-00002.warc.wet.jsonl.zst"))
    assert [d.source for d in first] == ["commoncrawl"] * len(first)
    assert all(
        d.meta["language"] == "en" and d.meta["url"].startswith("https://news.")
        for d in first + second + third
    )
    cc = report["sources"]["commoncrawl"]
    steps = {s["name"]: s for s in cc["stages"]}
    assert [s["name"] for s in cc["stages"]] == ["read", "line_dedup", "langid", "c4_quality"]
    assert steps["read"]["dropped"] == {"record without a body": 1}
    assert steps["langid"]["dropped"] == {"language fr": 1}
    # Line dedup runs over groups of 2 shards: the 4 boilerplate lines stay on the first page of each group
    # (shards 0-1: 8 English pages, shard 2: 4 pages) and go from the others.
    assert steps["line_dedup"]["tallies"]["lines removed"] == 4 * (8 - 1) + 4 * (4 - 1)
    assert cc["docs_out"] == len(first) + len(second) + len(third) == 12
    assert cc["languages"] == {"en": 12, "fr": 1}
    assert report["sources"]["c4"]["stages"][1]["dropped"] == {"exact duplicate": 1}
    assert report["mixture"]["commoncrawl"]["weight"] == pytest.approx(0.8)
    for name in ("report.json", "report.md", "report.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| langid | 13 | 12 |" in md
    (dedup_row,) = [line for line in md.splitlines() if line.startswith("| line_dedup |")]
    assert dedup_row.endswith("| lines removed: 40 |")  # the tally of report.json, in report.md too


def test_report_md_shows_each_stage_s_tallies_but_languages():
    stage = StageStats("perplexity", 5, 4, 50, 40)
    stage.tallies.update({"bucket head": 2, "bucket middle": 1, "bucket tail": 1, "language en": 5})
    report = {"recipe": "r.toml", "output": "out", "mixture": {}}
    report["sources"] = {
        "cc": {
            "shards": 1,
            "shards_skipped_as_finished": 0,
            "docs_out": 4,
            "bytes_out": 40,
            "stages": [stage.to_dict()],
            "languages": {"en": 5},
        }
    }
    md = to_markdown(report)
    assert "| perplexity | 5 | 4 | 0.00 | 0.00 |  | bucket head: 2; bucket middle: 1; bucket tail: 1 |" in md
    assert "Languages (documents): en 5" in md


def test_rerun_skips_finished_shards_and_rebuilds_a_lost_one_identically(crawl, tmp_path):
    out = tmp_path / "out"
    run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    before = _shards(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.zst")}
    report = run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.zst")} == mtimes  # nothing rewritten
    assert report["sources"]["commoncrawl"]["shards_skipped_as_finished"] == 3
    assert report["sources"]["commoncrawl"]["docs_out"] == 12  # counts come from the finished shards
    # Lose the second shard of the first dedup group: rebuilt, it must still dedup against the first.
    (out / "commoncrawl/CC-MAIN-00001.warc.wet.jsonl.zst").unlink()
    run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    assert _shards(out) == before
    # A changed recipe makes every shard of the changed source stale.
    crawl.write_text(crawl.read_text().replace("min_sentences = 3", "min_sentences = 50"))
    report = run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    assert report["sources"]["commoncrawl"]["shards_skipped_as_finished"] == 0
    assert report["sources"]["c4"]["shards_skipped_as_finished"] == 1
    assert report["sources"]["commoncrawl"]["docs_out"] < 12


def test_a_crash_leaves_no_half_written_shard(crawl, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = C4Quality.apply

    def failing(self, doc):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("simulated crash")
        return original(self, doc)

    monkeypatch.setattr(C4Quality, "apply", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    out = tmp_path / "out"
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    # The shard that was being written when it crashed is absent, and so are temporary files.
    assert not any(name.endswith(".tmp") for name in written)
    assert "CC-MAIN-00001.warc.wet.jsonl.zst" not in written
    monkeypatch.setattr(C4Quality, "apply", original)
    run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    assert len(_shards(out)) == 4


def test_process_pool_gives_the_same_shards(crawl, tmp_path):
    run_recipe(load_recipe(crawl), workers=1, show_progress=False)
    one = _shards(tmp_path / "out")
    run_recipe(load_recipe(crawl, output=str(tmp_path / "pool")), workers=2, show_progress=False)
    assert _shards(tmp_path / "pool") == one


def test_malformed_input_of_every_kind_is_skipped_and_counted(tmp_path, articles):
    raw = tmp_path / "raw"
    pages = crawl_pages(articles, 3)
    (raw / "cc").mkdir(parents=True)
    write_wet(raw / "cc" / "a.warc.wet.gz", pages + [("https://x.example/empty", b"")])
    (raw / "c4").mkdir()
    data = gzip.compress(
        "".join(json.dumps({"text": f"line {i} " * 30}) + "\n" for i in range(3000)).encode()
    )
    (raw / "c4" / "cut.json.gz").write_bytes(data[: len(data) // 2])
    (raw / "c4" / "bad.json").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    repo = raw / "github" / "repo"
    repo.mkdir(parents=True)
    (repo / "main.py").write_text("print('hi')\n")
    (repo / "blob.h").write_bytes(b"\0\1\2binary")
    (raw / "wiki").mkdir()
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><siteinfo><dbname>enwiki</dbname>'
        "</siteinfo><page><title>A</title><ns>0</ns><id>1</id><revision><id>2</id><text>Alpha text."
        "</text></revision></page><page><title>B</title><ns>0</ns><id>3</id><revision><text>Bet"
    )
    (raw / "wiki" / "enwiki-pages-articles.xml").write_text(xml)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        textwrap.dedent(f"""
        [run]
        output = "{tmp_path / "out"}"
        [sources.commoncrawl]
        inputs = ["{raw}/cc/*"]
        [sources.c4]
        reader = "jsonl"
        inputs = ["{raw}/c4/*"]
        [sources.github]
        inputs = ["{raw}/github/*"]
        [sources.wikipedia]
        inputs = ["{raw}/wiki/*"]
    """)
    )
    report = run_recipe(load_recipe(recipe), workers=2, show_progress=False)
    read = {name: src["stages"][0] for name, src in report["sources"].items()}
    assert read["commoncrawl"]["dropped"] == {"record without a body": 1}
    assert read["commoncrawl"]["docs_out"] == 3
    assert read["c4"]["dropped"] == {"truncated or corrupt file": 1, "invalid UTF-8": 1}
    assert read["c4"]["docs_out"] > 1000
    assert read["github"]["dropped"] == {"binary file": 1} and read["github"]["docs_out"] == 1
    assert read["wikipedia"]["dropped"] == {"truncated or malformed XML": 1}
    assert read["wikipedia"]["docs_out"] == 1
    wiki = list(read_shard(tmp_path / "out/wikipedia/enwiki-pages-articles.xml.jsonl.zst"))
    assert [d.text for d in wiki] == ["Alpha text."]
    md = (tmp_path / "out/report.md").read_text()
    assert "truncated or corrupt file" in md and os.fspath(raw / "c4" / "cut.json.gz") in md
