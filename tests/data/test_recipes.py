"""The shipped recipes: Table 1 in configs/data/llama.toml (run end to end on small inputs of every
source), and the quickstart corpus built from the standard library."""

from __future__ import annotations

import bz2
import gzip
import json
import math
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from llamafoundry.data.filters.classifier import train_classifier
from llamafoundry.data.filters.perplexity import normalize_for_lm
from llamafoundry.data.mixture import PAPER_MIXTURE, load_mixture
from llamafoundry.data.pipeline import run_recipe
from llamafoundry.data.recipe import load_recipe
from llamafoundry.data.textio import read_shard
from tests.data.helpers import crawl_pages, write_wet

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"


def test_llama_recipe_carries_table_1():
    mixture = load_mixture(CONFIGS / "llama.toml")
    assert list(mixture) == list(PAPER_MIXTURE)
    for name, share in PAPER_MIXTURE.items():
        assert mixture[name].weight == pytest.approx(share.weight)
        assert mixture[name].epochs == share.epochs


@pytest.mark.slow
def test_quickstart_recipe_builds_code_and_prose_from_the_stdlib(tmp_path):
    report = run_recipe(
        load_recipe(CONFIGS / "quickstart.toml", output=str(tmp_path)), workers=2, show_progress=False
    )
    github = list(read_shard(tmp_path / "github" / next((tmp_path / "github").glob("*.jsonl.zst")).name))
    docs = list(read_shard(next((tmp_path / "pydocs").glob("*.jsonl.zst"))))
    assert len(github) > 300 and len(docs) > 200
    assert {d.meta["license"] for d in github} <= {"Python-2.0", "Python-2.0.1", "PSF-2.0"}
    assert all(d.meta["language"] == "Python" for d in github)
    assert not any(d.meta["path"].startswith(("site-packages/", "test/")) for d in github)
    assert any(d.id == "github:" + Path(d.id[7:]).parts[0] + "/json/__init__.py" for d in github)
    assert any(d.id == "pydocs:topic/assert" for d in docs)
    assert report["sources"]["github"]["stages"][1]["name"] == "license"
    assert report["sources"]["pydocs"]["languages"]["en"] > 200


def _sentencepiece(text_file: Path, prefix: Path) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(prefix), vocab_size=400, model_type="unigram", minloglevel=2
    )
    return prefix.with_suffix(".model")


def _arpa_over_pieces(path: Path, sp_model: Path, lines: list[str]) -> None:
    """A unigram ARPA over the SentencePiece pieces of the normalised lines, as CCNet's LMs are."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    counts = Counter()
    for line in lines:
        pieces = sp.encode(normalize_for_lm(line), out_type=str)
        if pieces:
            counts.update(pieces + ["</s>"])
    total = sum(counts.values()) + len(counts) + 1
    rows = [f"{math.log10((c + 1) / total):.6f}\t{w}\t0" for w, c in counts.items()]
    rows += [f"{math.log10(1 / total):.6f}\t<unk>\t0", "-99\t<s>\t0"]
    path.write_text(
        f"\\data\\\nngram 1={len(rows)}\nngram 2=1\n\n\\1-grams:\n"
        + "\n".join(rows)
        + "\n\n\\2-grams:\n-0.1\t<s> </s>\n\n\\end\\\n"
    )


@pytest.mark.slow
def test_llama_recipe_runs_every_source_end_to_end(tmp_path, articles, shared_data, monkeypatch):
    """configs/data/llama.toml as shipped, from a folder laid out as it expects (data/raw, models)."""
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "raw"
    pages = crawl_pages(articles, 16)
    (raw / "commoncrawl" / "2019-30").mkdir(parents=True)
    write_wet(raw / "commoncrawl" / "2019-30" / "CC-MAIN-00000.warc.wet.gz", pages[:8])
    (raw / "c4").mkdir()
    c4 = "".join(json.dumps({"text": text, "url": url}) + "\n" for url, text in pages[8:])
    (raw / "c4" / "c4-train.00000-of-01024.json.gz").write_bytes(gzip.compress(c4.encode()))
    repo = raw / "github" / "adder"
    repo.mkdir(parents=True)
    shutil.copy("/usr/share/common-licenses/Apache-2.0", repo / "LICENSE")
    (repo / "add.py").write_text(
        "# Copyright 2021 Ada\n# Licensed under the Apache License 2.0\n\ndef add(a, b):\n    return a + b\n"
    )
    (raw / "wikipedia").mkdir()
    dump = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><siteinfo><dbname>enwiki</dbname>'
        "<base>https://en.wikipedia.org/wiki/Main_Page</base></siteinfo><page><title>Ebro</title><ns>0</ns>"
        "<id>7</id><revision><id>8</id><text>The '''Ebro''' is a [[river]] in [[Spain]].{{cite}}</text>"
        "</revision></page></mediawiki>"
    )
    (raw / "wikipedia" / "enwiki-20220701-pages-articles1.xml.bz2").write_bytes(bz2.compress(dump.encode()))
    (raw / "books").mkdir()
    book = (shared_data / "corpora/tinyshakespeare/input.txt").read_text()[:200_000]
    (raw / "books" / "shakespeare.txt").write_text(book)
    (raw / "books" / "shakespeare-copy.txt").write_text(book[:-5000])
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "main.tex").write_text(
        "\\documentclass{article}\\newcommand{\\R}{\\mathbb{R}}\n\\begin{document}\n"
        "\\section{Intro}\nIn $\\R$.\n\\end{document}\n"
    )
    (raw / "arxiv").mkdir()
    with tarfile.open(raw / "arxiv" / "2302.13971.tar.gz", "w:gz") as tar:
        tar.add(paper, arcname=".")
    (raw / "stackexchange" / "math.stackexchange.com").mkdir(parents=True)
    (raw / "stackexchange" / "math.stackexchange.com" / "Posts.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
        '  <row Id="1" PostTypeId="1" Score="3" Title="Is 1 prime?" Body="&lt;p&gt;Is it?&lt;/p&gt;" Tags="|primes|" />\n'
        '  <row Id="2" PostTypeId="2" ParentId="1" Score="5" Body="&lt;p&gt;No, by definition.&lt;/p&gt;" />\n'
        "</posts>\n"
    )
    models = tmp_path / "models" / "ccnet"
    models.mkdir(parents=True)
    wiki_text = [line for a in articles[20:120] for line in a[1:]]
    (tmp_path / "lm.txt").write_text("\n".join(wiki_text))
    sp_model = _sentencepiece(tmp_path / "lm.txt", tmp_path / "sp")
    shutil.copy(sp_model, models / "en.sp.model")
    _arpa_over_pieces(models / "en.arpa", sp_model, wiki_text)
    web = [line for line in (shared_data / "realtoxicityprompts/nontoxic.jsonl").read_text().splitlines()]
    web = [" ".join(json.loads(x)["prompt"]["text"] for x in web[i : i + 3]) for i in range(0, 600, 3)]
    train_classifier(
        ["\n".join(a[1:]) for a in articles[20:220]], web, tmp_path / "models" / "wiki_classifier.bin"
    )

    report = run_recipe(load_recipe(CONFIGS / "llama.toml"), workers=2, show_progress=False)
    out = tmp_path / "runs" / "data" / "llama"
    sources = report["sources"]
    assert list(sources) == list(PAPER_MIXTURE)
    cc = {s["name"]: s for s in sources["commoncrawl"]["stages"]}
    assert list(cc) == ["read", "line_dedup", "langid", "perplexity", "wiki_classifier"]
    assert cc["read"]["docs_out"] == 8 and cc["wiki_classifier"]["docs_in"] > 0
    assert sources["c4"]["docs_out"] > 0
    assert [d.text for d in read_shard(out / "github" / "adder.jsonl.zst")] == [
        "def add(a, b):\n    return a + b\n"
    ]
    assert [d.text for d in read_shard(next((out / "wikipedia").glob("*.jsonl.zst")))] == [
        "The Ebro is a river in Spain."
    ]
    assert sources["books"]["docs_out"] == 1 and sources["books"]["stages"][1]["dropped"] == {
        "near-duplicate book": 1
    }
    assert [d.text for d in read_shard(out / "arxiv" / "2302.13971.tar.jsonl.zst")] == [
        "\\section{Intro}\nIn $\\mathbb{R}$."
    ]
    assert [d.text for d in read_shard(next((out / "stackexchange").glob("*.jsonl.zst")))] == [
        "Is 1 prime?\n\nIs it?\n\nNo, by definition."
    ]
    assert report["mixture"]["commoncrawl"]["weight"] == pytest.approx(0.67)
