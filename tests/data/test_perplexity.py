"""The perplexity filter with a KenLM model (ARPA written here) and with one of our own models."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from llamafoundry.data.document import Document
from llamafoundry.data.filters.perplexity import KENLM_MAGIC, PerplexityFilter, normalize_for_lm
from llamafoundry.errors import UserError
from tests.data.helpers import write_wet

GIBBERISH = "qzx vlork ptang wibble frop znarg\nblix quonk zzzt"


def _write_unigram_arpa(path, lines):
    """A unigram ARPA model with add-one smoothing over the normalised words (and </s>) of `lines`.
    KenLM reads bigram models and up: one bigram (an empty line, never scored) and zero back-off
    weights leave every probability a unigram one."""
    counts = Counter()
    for line in lines:
        words = normalize_for_lm(line).split()
        if words:
            counts.update(words + ["</s>"])
    total = sum(counts.values()) + len(counts) + 1
    probs = {w: (c + 1) / total for w, c in counts.items()}
    probs["<unk>"] = 1 / total
    unigrams = [f"{math.log10(p):.6f}\t{w}\t0" for w, p in probs.items()] + ["-99\t<s>\t0"]
    path.write_text(
        f"\\data\\\nngram 1={len(unigrams)}\nngram 2=1\n\n\\1-grams:\n"
        + "\n".join(unigrams)
        + "\n\n\\2-grams:\n-0.1\t<s> </s>\n\n\\end\\\n"
    )
    return probs


def _expected_ppl(probs, text):
    log_sum, length = 0.0, 0
    for line in text.split("\n"):
        words = normalize_for_lm(line).split()
        if not words:
            continue
        for w in words + ["</s>"]:
            log_sum += math.log10(probs.get(w, probs["<unk>"]))
        length += len(words) + 1
    return 10 ** (-log_sum / length)


def test_kenlm_perplexity_is_ccnets_formula_and_filters(tmp_path, shared_data):
    lines = (shared_data / "corpora/tinyshakespeare/input.txt").read_text().splitlines()
    arpa = tmp_path / "en.arpa"
    probs = _write_unigram_arpa(arpa, lines[:30000])
    held_out = "\n".join(lines[30000:30040])
    stage = PerplexityFilter(model=str(arpa), max_perplexity=2000)
    assert stage.scorer.perplexity(held_out) == pytest.approx(_expected_ppl(probs, held_out), rel=1e-4)
    kept = list(
        stage([Document("play", held_out, "commoncrawl", {}), Document("junk", GIBBERISH, "commoncrawl", {})])
    )
    assert [d.id for d in kept] == ["play"]
    assert kept[0].meta["perplexity"] < 2000
    assert stage.stats.dropped == {"perplexity too high": 1}


def test_normalisation_before_the_lm():
    # CCNet maps the em dash to " - ", leaving the spaces around it doubled.
    assert normalize_for_lm("  Héllo, Wörld — it’s 2023！ ") == "hello, world  -  it's 0000!"


def test_our_model_gives_per_character_perplexity(tmp_path, shared_data):
    from llamafoundry.checkpoint import load_model, save_model
    from llamafoundry.tokenizer import train_tokenizer

    text_file = tmp_path / "train.txt"
    text_file.write_text((shared_data / "corpora/tinyshakespeare/input.txt").read_text()[:100_000])
    tokenizer = train_tokenizer([text_file], tmp_path / "tokenizer.model", vocab_size=512)
    model, _, _ = load_model("llama-1m", seed=0)
    save_model(tmp_path / "lm", model, tokenizer)

    doc = "First Citizen:\nBefore we proceed any further, hear me speak."
    stage = PerplexityFilter(model=str(tmp_path / "lm"), max_perplexity=1e9)
    # Independently: one forward pass over the whole (short) document.
    ids = torch.tensor([tokenizer.encode(doc, bos=True)])
    with torch.inference_mode():
        logits = model(ids[:, :-1]).float()
    nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum").item()
    assert stage.scorer.perplexity(doc) == pytest.approx(math.exp(nll / len(doc)), rel=1e-5)

    strict = PerplexityFilter(model=str(tmp_path / "lm"), max_perplexity=stage.scorer.perplexity(doc) / 2)
    assert list(strict([Document("d", doc, "commoncrawl", {})])) == []
    long_doc = doc * 20  # longer than the model's context: scored in windows
    assert math.isfinite(stage.scorer.perplexity(long_doc))


@pytest.mark.parametrize("damage", ["cut short", "binary header only"])
def test_an_unusable_kenlm_file_is_one_line_not_a_traceback(tmp_path, cli, shared_data, damage):
    model = tmp_path / "en.arpa.bin"
    if damage == "cut short":
        _write_unigram_arpa(
            model, (shared_data / "corpora/tinyshakespeare/input.txt").read_text().splitlines()
        )
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    else:
        model.write_bytes(KENLM_MAGIC + b" version 5\0" + bytes(40))
    write_wet(tmp_path / "CC-0.warc.wet.gz", [("https://example.com/", "Some page text.")])
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[run]
output = "{tmp_path / "out"}"
[sources.commoncrawl]
inputs = ["{tmp_path}/*.warc.wet.gz"]
[[sources.commoncrawl.stages]]
stage = "perplexity"
model = "{model}"
max_perplexity = 1000.0
""")
    done = cli("data", "run", recipe, "--workers", 1, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "OSError" not in done.stderr
    # KenLM's own chatter on stderr ("Loading the LM will be faster...") aside, ours is one line.
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("llamafoundry")]
    assert f"perplexity model {model} is not a usable KenLM file (" in line and "rebuild it" in line


BUCKET_RECIPE = """
[run]
output = "{out}"

[sources.commoncrawl]
inputs = ["{wet}"]

[[sources.commoncrawl.stages]]
stage = "langid"
languages = ["en"]

[[sources.commoncrawl.stages]]
stage = "perplexity"
model = "{arpa}"
percentiles = [30, 60]
sample_docs = 12
keep = ["head", "middle"]
"""


def test_buckets_cut_at_the_sample_passs_percentiles(tmp_path, articles):
    import numpy as np

    from llamafoundry.data.filters.langid import LanguageFilter
    from llamafoundry.data.pipeline import run_recipe
    from llamafoundry.data.recipe import load_recipe
    from llamafoundry.data.sources.commoncrawl import CommonCrawlReader
    from llamafoundry.data.textio import read_shard
    from tests.data.helpers import FRENCH, crawl_pages, write_wet

    arpa = tmp_path / "en.arpa"
    _write_unigram_arpa(arpa, [line for a in articles[30:130] for line in a])
    spam = [
        (f"https://spam.example.com/{i}", "buy cheap pills now best price click here " * (i + 2))
        for i in range(4)
    ]
    pages = crawl_pages(articles, 20)
    # French first: the langid stage drops it, so the sample is of the perplexity stage's own input.
    wet = tmp_path / "CC-MAIN-00000.warc.wet.gz"
    write_wet(wet, [("https://fr.example.com/rhone", FRENCH)] + pages[:8] + spam + pages[8:])
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(BUCKET_RECIPE.format(out=tmp_path / "out", wet=wet, arpa=arpa))

    report = run_recipe(load_recipe(recipe), workers=1, show_progress=False)

    scorer = PerplexityFilter(model=str(arpa)).scorer
    english = list(LanguageFilter(["en"])(CommonCrawlReader().read(wet)))
    assert len(english) == 24
    ppl = {d.id: scorer.perplexity(d.text) for d in english}
    cutoffs = np.percentile([ppl[d.id] for d in english[:12]], [30, 60])
    (buckets,) = report["sources"]["commoncrawl"]["perplexity_buckets"]
    assert buckets["cutoffs"] == pytest.approx(list(cutoffs), rel=1e-9)
    assert buckets["percentiles"] == [30, 60] and buckets["keep"] == ["head", "middle"]

    expected = {
        i: "head" if p < cutoffs[0] else "middle" if p < cutoffs[1] else "tail" for i, p in ppl.items()
    }
    kept = list(read_shard(tmp_path / "out" / "commoncrawl" / "CC-MAIN-00000.warc.wet.jsonl.zst"))
    assert {d.id: d.meta["bucket"] for d in kept} == {i: b for i, b in expected.items() if b != "tail"}
    counts = Counter(expected.values())
    assert all(counts[b] > 0 for b in ("head", "middle", "tail")), counts
    stage = report["sources"]["commoncrawl"]["stages"][2]
    assert stage["dropped"] == {"perplexity in the tail bucket": counts["tail"]}
    assert stage["tallies"] == {f"perplexity bucket {b}": n for b, n in counts.items()}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"head < {cutoffs[0]:,.1f} <= middle < {cutoffs[1]:,.1f} <= tail" in markdown


def test_bucket_options_are_checked(tmp_path):
    arpa = tmp_path / "en.arpa"
    _write_unigram_arpa(arpa, ["a b c"])
    with pytest.raises(UserError, match="percentiles must be two increasing numbers"):
        PerplexityFilter(model=str(arpa), percentiles=[60, 30])
    with pytest.raises(UserError, match="keep must name some of head, middle, tail"):
        PerplexityFilter(model=str(arpa), cutoffs=[1.0, 2.0], keep=["top"])
    stage = PerplexityFilter(model=str(arpa), percentiles=[30, 60])
    with pytest.raises(UserError, match="need a sample pass"):
        list(stage([Document("d", "a b", "commoncrawl", {})]))
