"""CCNet's reference language model: the modified Kneser-Ney estimator against hand-computed values and
KenLM's reading of its ARPA file, and `data train-reference-lm` on the Wikipedia dump sample."""

from __future__ import annotations

import bz2
import math
import random
import re
import statistics
from fractions import Fraction as F

import pytest

from llamafoundry.data.filters.perplexity import PerplexityFilter
from llamafoundry.data.kneser_ney import estimate
from llamafoundry.data.sources.commoncrawl import CommonCrawlReader
from llamafoundry.data.sources.wikipedia import WikipediaReader
from llamafoundry.errors import UserError
from tests.helpers import assert_user_error

DUMP = (
    "corpora/wikipedia_xml_dump_sample/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
WET = "corpora/commoncrawl_wet_sample/whirlwind.warc.wet.gz"


def read_arpa(path) -> tuple[dict[tuple[str, ...], tuple[float, float]], int]:
    """{n-gram: (log10 p, log10 backoff)} of an ARPA file, and its order."""
    grams, order = {}, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\\(\d+)-grams:", line):
            order = int(m[1])
        elif order and line and line != "\\end\\":
            fields = line.split("\t")
            grams[tuple(fields[1].split(" "))] = (
                float(fields[0]),
                float(fields[2]) if len(fields) > 2 else 0.0,
            )
    return grams, order


def log10_prob(grams, order: int, context: list[str], word: str) -> float:
    """ARPA backoff semantics: p(w | h) if hw is listed, else backoff(h) * p(w | h without its first word)."""
    h = tuple(context[-(order - 1) :])
    backoffs = 0.0
    while h + (word,) not in grams:
        backoffs += grams.get(h, (0.0, 0.0))[1]
        h = h[1:]
    return backoffs + grams[h + (word,)][0]


def score(grams, order: int, words: list[str]) -> float:
    """log10 p(words </s> | <s>), unknown words as <unk>, as KenLM's `score(bos=True, eos=True)`."""
    words = [w if (w,) in grams else "<unk>" for w in words] + ["</s>"]
    return sum(log10_prob(grams, order, ["<s>", *words[:i]], w) for i, w in enumerate(words))


def test_discounts_and_probabilities_are_hand_computed_modified_kneser_ney(tmp_path):
    import kenlm

    # <s> a </s> x3, <s> b </s> x2, <s> c </s>, <s> c c </s>.
    model = estimate([["a"], ["c"], ["b"], ["a"], ["a"], ["c", "c"], ["b"]], order=3)
    # Adjusted counts (distinct words before; raw counts at the top order and after <s>) and their
    # counts-of-counts t1..t4, then D_k = k - (k+1) Y t_{k+1} / t_k with Y = t1 / (t1 + 2 t2):
    # 1-grams: a 1 ({<s>}), b 1, c 2 ({<s>, c}), </s> 3 ({a, b, c}): t = 2, 1, 1, 0; Y = 1/2.
    # 2-grams: <s> a 3, <s> b 2, <s> c 2, c </s> 2 ({<s>, c}), a </s> 1, b </s> 1, c c 1: t = 3, 3, 1, 0; Y = 1/3.
    # 3-grams: <s> a </s> 3, <s> b </s> 2, <s> c </s> 1, <s> c c 1, c c </s> 1: t = 3, 1, 1, 0; Y = 3/5.
    expected = [(F(1, 2), F(1, 2), 3), (F(1, 3), F(5, 3), 3), (F(3, 5), F(1, 5), 3)]
    for got, want in zip(model.discounts, expected, strict=True):
        assert got == pytest.approx([float(w) for w in want], abs=1e-12)
    model.write_arpa(tmp_path / "tiny.arpa")
    grams, order = read_arpa(tmp_path / "tiny.arpa")
    assert order == 3 and len(grams) == 6 + 7 + 5  # <unk> <s> </s> a b c; seven 2-grams; five 3-grams
    # Unigrams: sum of adjusted counts 7; gamma = (D1*2 + D2*1 + D3*1) / 7 = 9/14, spread over the 5 words
    # that can be predicted (<unk> </s> a b c): p(a) = (1 - 1/2)/7 + 9/70 = 1/5, p(c) = 3/2/7 + 9/70 = 12/35,
    # p(</s>) = (3 - 3)/7 + 9/70 = 9/70, p(<unk>) = 9/70.
    # After <s>: total 7, gamma = (3 + 5/3 + 5/3)/7 = 19/21; p(a | <s>) = 0 + 19/21 * 1/5 = 19/105,
    # p(c | <s>) = (2 - 5/3)/7 + 19/21 * 12/35 = 263/735.
    # After c: c </s> 2, c c 1: total 3, gamma = (5/3 + 1/3)/3 = 2/3; p(c | c) = (2/3)/3 + 2/3 * 12/35 = 142/315.
    # After a: a </s> 1: gamma = (1/3)/1; p(</s> | a) = 2/3 + 1/3 * 9/70 = 149/210.
    # After <s> a: <s> a </s> 3: gamma = 3/3 = 1; p(</s> | <s> a) = 0 + p(</s> | a) = 149/210.
    # After <s> c: two 3-grams of count 1: total 2, gamma = 6/5/2 = 3/5;
    # p(c | <s> c) = (1 - 3/5)/2 + 3/5 * 142/315 = 247/525.
    probs = {
        ("a",): F(1, 5),
        ("c",): F(12, 35),
        ("</s>",): F(9, 70),
        ("<unk>",): F(9, 70),
        ("<s>", "a"): F(19, 105),
        ("<s>", "c"): F(263, 735),
        ("c", "c"): F(142, 315),
        ("a", "</s>"): F(149, 210),
        ("<s>", "a", "</s>"): F(149, 210),
        ("<s>", "c", "c"): F(247, 525),
    }
    backoffs = {("<s>",): F(19, 21), ("c",): F(2, 3), ("a",): F(1, 3), ("<s>", "a"): 1, ("<s>", "c"): F(3, 5)}
    for gram, p in probs.items():
        assert grams[gram][0] == pytest.approx(math.log10(p), abs=1e-6), gram
    for gram, gamma in backoffs.items():
        assert grams[gram][1] == pytest.approx(math.log10(gamma), abs=1e-6), gram
    assert grams[("<s>",)][0] == -99  # never predicted
    lm = kenlm.Model(str(tmp_path / "tiny.arpa"))
    assert lm.score("a", bos=True, eos=True) == pytest.approx(math.log10(F(19, 105) * F(149, 210)), abs=1e-5)


def test_kenlm_scores_our_arpa_as_its_backoff_semantics_say(tmp_path, shared_data):
    import kenlm

    lines = (shared_data / "corpora/tinyshakespeare/input.txt").read_text().lower().splitlines()
    sentences = [line.split() for line in lines if line.split()]
    estimate(sentences[:20000], order=5).write_arpa(tmp_path / "lm.arpa")
    grams, order = read_arpa(tmp_path / "lm.arpa")
    lm = kenlm.Model(str(tmp_path / "lm.arpa"))
    held_out = sentences[20000:20400] + [["thou", "art", "a", "zqxv", "villain"]]
    for words in held_out:
        assert score(grams, order, words) == pytest.approx(lm.score(" ".join(words)), abs=1e-4), words
    # Interpolated Kneser-Ney is a distribution over the vocabulary (<s> aside) after any context.
    vocab = [g[0] for g in grams if len(g) == 1 and g != ("<s>",)]
    for context in (["<s>"], ["the"], ["<s>", "first", "citizen", ":"], ["to", "be", "or"], ["zqxv"]):
        assert sum(10 ** log10_prob(grams, order, context, w) for w in vocab) == pytest.approx(1, abs=1e-5)


def test_too_little_text_for_discounts_is_a_clear_error():
    with pytest.raises(
        UserError, match="too little text for Kneser-Ney discounts: no 1-gram has adjusted count 3"
    ):
        estimate([["a", "b", "c"], ["a", "b", "d"], ["b", "c"]], order=3)
    with pytest.raises(UserError, match="at least 2"):
        estimate([["a"]], order=1)


def _split_dump(dump, train, held_out, every: int) -> None:
    """Every `every`-th page of the bz2 `dump` into `held_out`, the rest into `train` (same siteinfo)."""
    xml = bz2.decompress(dump.read_bytes()).decode("utf-8")
    pages = re.findall(r"  <page>.*?</page>\n", xml, re.S)
    head, tail = xml[: xml.index("  <page>")], "</mediawiki>\n"
    train.write_bytes(
        bz2.compress((head + "".join(p for i, p in enumerate(pages) if i % every) + tail).encode())
    )
    held_out.write_text(head + "".join(pages[::every]) + tail, encoding="utf-8")


def _spam(count: int) -> list[str]:
    rng = random.Random(0)
    words = [
        "free",
        "casino",
        "bonus",
        "click",
        "here",
        "best",
        "cheap",
        "pills",
        "buy",
        "now",
        "win",
        "money",
        "online",
        "deals",
        "offer",
        "limited",
    ]
    ads = "BUY CHEAP WATCHES!!! $$$ 100% FREE >>> http://cheap.example.com <<< CLICK NOW!!! "
    return [" ".join(rng.choice(words) for _ in range(60)) for _ in range(count)] + [ads * 3]


def test_reference_lm_from_the_dump_sample_prefers_held_out_wikipedia(cli, tmp_path, shared_data):
    train, held_out = tmp_path / "train-pages-articles.xml.bz2", tmp_path / "held-out-pages-articles.xml"
    _split_dump(shared_data / DUMP, train, held_out, every=5)
    done = cli("data", "train-reference-lm", train, "-o", tmp_path / "ccnet", "--vocab-size", 8000, "--quiet")
    assert done.returncode == 0, done.stderr
    held_out_docs = list(WikipediaReader().read(held_out))
    assert f"{106 - len(held_out_docs)} articles" in done.stdout and "5-grams" in done.stdout
    assert sorted(p.name for p in (tmp_path / "ccnet").iterdir() if p.name[0] != ".") == [
        "en.arpa",
        "en.sp.model",
    ]
    # The recipe's perplexity stage reads the folder's files as they are.
    stage = PerplexityFilter(
        model=str(tmp_path / "ccnet/en.arpa"),
        tokenizer=str(tmp_path / "ccnet/en.sp.model"),
        max_perplexity=1e9,
    )
    paragraphs = [p for doc in held_out_docs for p in doc.text.split("\n") if len(p) > 200]
    wiki = statistics.median(stage.scorer.perplexity(p) for p in paragraphs)
    (wet,) = [stage.scorer.perplexity(doc.text) for doc in CommonCrawlReader().read(shared_data / WET)]
    spam = min(stage.scorer.perplexity(text) for text in _spam(10))
    print(f"median held-out paragraph {wiki:.0f}, WET page {wet:.0f}, least spam {spam:.0f}")
    assert len(paragraphs) > 100
    assert wiki < wet / 2 and wiki < spam / 4


def test_train_reference_lm_says_what_is_wrong_in_one_line(cli, tmp_path):
    assert_user_error(
        cli("data", "train-reference-lm", tmp_path / "no.xml.bz2", "-o", tmp_path / "lm"), "no.xml.bz2"
    )
    dump = tmp_path / "enwiki-pages-articles.xml"
    dump.write_text("<mediawiki><siteinfo><dbname>enwiki</dbname></siteinfo></mediawiki>")
    assert_user_error(cli("data", "train-reference-lm", dump, "-o", tmp_path / "lm", "--order", 1), "--order")
    assert_user_error(
        cli("data", "train-reference-lm", dump, "-o", tmp_path / "lm", "--vocab-size", 10), "--vocab-size"
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert_user_error(cli("data", "train-reference-lm", dump, "-o", tmp_path / "mine"), "did not write")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert_user_error(
        cli("data", "train-reference-lm", dump, "-o", tmp_path / "lm", "--quiet"), "no article text"
    )
    assert not (tmp_path / "lm").exists()
