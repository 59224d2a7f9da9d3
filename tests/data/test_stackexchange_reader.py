"""The StackExchange reader on a Posts.xml in the dump's format: answers by score, HTML stripped."""

from __future__ import annotations

import bz2
from xml.sax.saxutils import quoteattr

from llamafoundry.data.sources.stackexchange import StackExchangeReader, parse_tags


def _row(**attrs) -> str:
    return "  <row " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + " />\n"


def _posts() -> str:
    date = "2010-07-28T19:04:21.300"
    rows = [
        _row(
            Id=1,
            PostTypeId=1,
            AcceptedAnswerId=4,
            CreationDate=date,
            Score=12,
            ViewCount=900,
            Body="<p>How do I reverse a list in <code>Python</code>?</p>\n\n<pre><code>xs = [1, 2, 3]\n</code></pre>\n",
            OwnerUserId=7,
            LastActivityDate=date,
            Title="Reversing a list",
            Tags="|python|list|",
            AnswerCount=3,
            CommentCount=0,
            ContentLicense="CC BY-SA 2.5",
        ),
        _row(
            Id=2,
            PostTypeId=2,
            ParentId=1,
            CreationDate=date,
            Score=2,
            Body="<p>Use a loop &amp; append.</p>\n",
            OwnerUserId=8,
            ContentLicense="CC BY-SA 2.5",
        ),
        _row(Id=3, PostTypeId=5, CreationDate=date, Score=0, Body="<p>Tag wiki excerpt.</p>"),
        _row(
            Id=4,
            PostTypeId=2,
            ParentId=1,
            CreationDate=date,
            Score=10,
            Body="<p>Slice it:</p>\n\n<pre><code>xs[::-1]\n</code></pre>\n",
            OwnerUserId=9,
        ),
        _row(
            Id=5,
            PostTypeId=1,
            CreationDate=date,
            Score=3,
            Body="<p>Why is <em>this</em> slow?</p>",
            Title="A slow loop",
            Tags="<performance>",
            AnswerCount=0,
        ),
        _row(Id=6, PostTypeId=2, ParentId=1, CreationDate=date, Score=-1, Body="<p>Sort it backwards.</p>"),
    ]
    return '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "".join(rows) + "</posts>\n"


def test_questions_with_answers_best_first(tmp_path):
    site = tmp_path / "stackoverflow.com"
    site.mkdir()
    (site / "Posts.xml").write_text(_posts(), encoding="utf-8")
    reader = StackExchangeReader()
    docs = list(reader.read(site))
    assert [d.id for d in docs] == ["stackexchange:stackoverflow.com:1", "stackexchange:stackoverflow.com:5"]
    assert docs[0].text == (
        "Reversing a list\n\nHow do I reverse a list in Python?\n\nxs = [1, 2, 3]"
        "\n\nSlice it:\n\nxs[::-1]"
        "\n\nUse a loop & append."
        "\n\nSort it backwards."
    )
    assert docs[0].meta == {
        "site": "stackoverflow.com",
        "question_id": 1,
        "url": "https://stackoverflow.com/questions/1",
        "score": 12,
        "tags": ["python", "list"],
        "answer_ids": [4, 2, 6],
    }
    assert docs[1].text == "A slow loop\n\nWhy is this slow?"
    assert docs[1].meta["tags"] == ["performance"]
    assert not reader.stats.dropped


def test_cut_dump_keeps_the_complete_rows(tmp_path):
    posts = _posts()
    cut = posts.index('<row Id="5"') + 20
    path = tmp_path / "Posts.xml.bz2"
    path.write_bytes(bz2.compress(posts[:cut].encode()))
    reader = StackExchangeReader(site="stackoverflow.com")
    docs = list(reader.read(path))
    assert [d.meta["question_id"] for d in docs] == [1]
    assert docs[0].meta["answer_ids"] == [4, 2]  # answer 6 came after the cut
    assert list(reader.stats.dropped) == ["truncated or malformed XML"]


def test_both_tag_formats():
    assert parse_tags("<c++><templates>") == ["c++", "templates"]
    assert parse_tags("|c++|templates|") == ["c++", "templates"]
