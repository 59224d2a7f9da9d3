"""`data wiki-references`: the URLs a Wikipedia dump cites (the real dump sample), and the crawl's pages
at those URLs as the reference classifier's positives, random uncited pages as its negatives."""

from __future__ import annotations

import bz2
import html
import re

from llamafoundry.data.sources.jsonl import JsonlReader
from llamafoundry.data.wiki_references import dump_cited_urls, url_key
from tests.data.helpers import crawl_pages, write_wet
from tests.helpers import assert_user_error

DUMP = (
    "corpora/wikipedia_xml_dump_sample/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
# What a plain regex sees: the url= of {{cite ...}}/{{citation}} templates with no template inside them,
# and the http(s) links in <ref> tags once their templates are cut out.
CITE_URL = re.compile(
    r"\{\{\s*(?:cite[^|{}]*|citation)\s*(?:\|[^{}]*?)?\|\s*url\s*=\s*(https?://[^\s|}<\]]+)", re.I
)
REF = re.compile(r"<ref(?:\s[^>]*)?(?<!/)>(.*?)</ref>", re.S)
LINK = re.compile(r"https?://[^\s\]|<>\"]+")


def _regex_urls(xml: str) -> set[str]:
    # The XML escapes the wikitext once; the wikitext itself writes & as &amp; in some URLs.
    text = re.sub(r"<!--.*?-->", "", html.unescape(xml).replace("&amp;", "&"), flags=re.S)
    urls = CITE_URL.findall(text)
    for body in REF.findall(text):  # a bare link ends before trailing punctuation, as MediaWiki has it
        urls += [u.rstrip(".,;:!?") for u in LINK.findall(re.sub(r"\{\{.*?\}\}", "", body, flags=re.S))]
    return {url_key(u) for u in urls} - {None}


def test_cited_urls_of_the_dump_sample_match_a_regex_count(cli, shared_data, tmp_path):
    out = tmp_path / "cited.txt"
    done = cli("data", "wiki-references", str(shared_data / DUMP), "-o", str(out))
    assert done.returncode == 0, done.stderr
    urls = out.read_text().splitlines()
    assert f"{len(urls):,} cited URLs" in done.stdout
    ours = {url_key(u) for u in urls}
    assert len(ours) == len(urls) and all(u.startswith(("http://", "https://")) for u in urls)
    assert "http://www.britannica.com/eb/article-9117285" in urls  # Anarchism's first {{cite web}}
    regex = _regex_urls(bz2.decompress((shared_data / DUMP).read_bytes()).decode())
    # 3,753 parsed, 3,756 by regex, 3,749 in both. The regex also takes three archive.org links (a
    # template with a template inside survives its cut, archive-url and all); three bracketed links
    # end in ":", "," or ";" before their title, part of the URL for MediaWiki and the parser, cut by
    # the regex as if bare; one URL has "[]" in its query, where the two stop one character apart.
    assert abs(len(ours) - len(regex)) <= 0.005 * len(regex), (len(ours), len(regex))
    assert len(ours & regex) >= 0.995 * len(regex), len(ours & regex)


def test_pages_at_cited_urls_are_positives_and_random_pages_negatives(cli, shared_data, tmp_path, articles):
    # The dump's first two articles (Anarchism, Autism) are enough, and fast to parse.
    xml = bz2.decompress((shared_data / DUMP).read_bytes()).decode()
    dump = tmp_path / "enwiki-2-pages.xml"
    dump.write_text(xml[: xml.index("</page>", xml.index("</page>") + 1) + len("</page>")] + "</mediawiki>\n")
    cited = list(dump_cited_urls([dump]).values())
    assert len(cited) > 50
    a, b, c = cited[0], cited[10], cited[20]
    pages = crawl_pages(articles, 9)
    variant = (
        a.replace("http://", "https://", 1) if a.startswith("http://") else a.replace("https", "http", 1)
    )
    crawl = [
        (variant.rstrip("/") + "/#section", "the page cited first"),  # scheme, slash, fragment differ
        pages[0],
        (b, "the page cited eleventh"),
        pages[1],
        (b, "the same page crawled again"),
        *pages[2:5],
        (c, "the page cited 21st"),
        *pages[5:],
    ]
    wet = tmp_path / "CC-MAIN-0.warc.wet.gz"
    write_wet(wet, crawl)

    pos, neg = tmp_path / "cited.jsonl", tmp_path / "random.jsonl"
    args = ["data", "wiki-references", str(dump), "--crawl", str(wet), "-o", str(pos), "--negatives", "4"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"3 of them among {len(crawl)} crawl pages" in done.stdout
    positives = list(JsonlReader().read(pos))
    assert [d.text for d in positives] == [
        "the page cited first",
        "the page cited eleventh",
        "the page cited 21st",
    ]
    negatives = [d.meta["url"] for d in JsonlReader().read(tmp_path / "cited-random.jsonl")]
    assert len(set(negatives)) == 4 and set(negatives) <= {url for url, _ in pages}

    again = cli(*args, "--negative-output", str(neg), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert [d.meta["url"] for d in JsonlReader().read(neg)] == negatives  # seeded
    other = cli(*args, "--negative-output", str(neg), "--overwrite", "--seed", "1")
    assert other.returncode == 0, other.stderr
    assert [d.meta["url"] for d in JsonlReader().read(neg)] != negatives


def test_url_matching_ignores_scheme_www_slash_fragment_and_host_case():
    key = url_key("http://www.Example.com/a/b")
    same = ["https://example.com/a/b/", "http://EXAMPLE.com:80/a/b#top", "https://www.example.com/a/%62"]
    assert all(url_key(u) == key for u in same)
    assert url_key("http://example.com/a/b?x=1") != key and url_key("http://example.com/a/c") != key
    assert url_key("ftp://example.com/a") is None and url_key("http://[bad") is None


def test_user_errors(cli, shared_data, tmp_path):
    assert_user_error(
        cli("data", "wiki-references", str(tmp_path / "no.xml"), "-o", str(tmp_path / "u.txt")), "not found"
    )
    wet = tmp_path / "c.warc.wet.gz"
    write_wet(wet, [("http://a.example.com/", "a page")])
    done = cli(
        "data", "wiki-references", str(shared_data / DUMP), "--crawl", str(wet), "-o", str(tmp_path / "p.txt")
    )
    assert_user_error(done, "name it *.jsonl")
    (tmp_path / "notes.jsonl").write_text("my own notes\n")
    done = cli(
        "data",
        "wiki-references",
        str(wet),
        "--crawl",
        str(wet),
        "-o",
        str(tmp_path / "notes.jsonl"),
        "--overwrite",
    )
    assert_user_error(done, "notes.jsonl", "not a file this command writes")
    assert (tmp_path / "notes.jsonl").read_text() == "my own notes\n"
