"""The Wikipedia-reference classifier: trained with `llamafoundry data train-classifier`, used as a stage.

Positives are paragraphs of Wikipedia articles (the real dump sample); negatives are web text: the
OpenWebText snippets of RealToxicityPrompts' non-toxic set, a three per page.
"""

from __future__ import annotations

import json
import platform
import random
import subprocess
import sys

import pytest

from llamafoundry.cli import main
from llamafoundry.data.document import Document
from llamafoundry.data.filters.classifier import ReferenceClassifier
from llamafoundry.data.sources.wikipedia import WikipediaReader
from llamafoundry.errors import UserError

DUMP = (
    "corpora/wikipedia_xml_dump_sample/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)


@pytest.fixture(scope="module")
def pages(shared_data):
    paragraphs = []
    for doc in WikipediaReader().read(shared_data / DUMP):
        paragraphs += [p for p in doc.text.split("\n\n") if len(p) > 300]
        if len(paragraphs) > 1200:
            break
    random.Random(0).shuffle(paragraphs)
    snippets = []
    for line in (shared_data / "realtoxicityprompts/nontoxic.jsonl").read_text().splitlines():
        record = json.loads(line)
        snippets.append(record["prompt"]["text"] + record["continuation"]["text"])
    web = [" ".join(snippets[i : i + 3]).replace("\n", " ") for i in range(0, len(snippets) - 3, 3)]
    return paragraphs[:400], web[:400]


def test_train_with_the_cli_then_filter(tmp_path, pages, capsys):
    wiki, web = pages
    positives = tmp_path / "cited.jsonl"
    positives.write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki[:200]))
    negatives = tmp_path / "random.txt"
    negatives.write_text("\n".join(web[:200]) + "\n")
    model = tmp_path / "wiki_classifier.bin"
    args = ["data", "train-classifier", "--positive", str(positives), "--negative", str(negatives)]
    assert main([*args, "--output", str(model)]) == 0
    assert "200 positive and 200 negative" in capsys.readouterr().out
    # fastText's default 2M hash buckets made this a 512 MB file; quantized it is about 0.9 MB.
    assert model.stat().st_size < 2_000_000, model.stat().st_size

    stage = ReferenceClassifier(model=str(model), threshold=0.5)
    wiki_scores = [stage.score(t) for t in wiki[200:]]
    web_scores = [stage.score(t) for t in web[200:]]
    # Held out: a Wikipedia paragraph outscores a web page in most pairs (ROC AUC), a clear margin over chance
    # for a model trained on 400 short texts.
    auc = sum(w > r for w in wiki_scores for r in web_scores) / (len(wiki_scores) * len(web_scores))
    assert auc > 0.8, auc
    held_out = [Document(f"wiki{i}", t, "commoncrawl", {}) for i, t in enumerate(wiki[200:])]
    held_out += [Document(f"web{i}", t, "commoncrawl", {}) for i, t in enumerate(web[200:])]
    kept = [d for d in stage(held_out)]
    assert all(d.meta["wiki_score"] >= 0.5 for d in kept)
    wiki_kept = sum(d.id.startswith("wiki") for d in kept) / len(wiki_scores)
    web_kept = sum(d.id.startswith("web") for d in kept) / len(web_scores)
    assert wiki_kept > web_kept + 0.4, (wiki_kept, web_kept)
    assert stage.stats.dropped["not like a Wikipedia reference"] == len(held_out) - len(kept)


def test_a_language_id_model_is_not_a_reference_classifier():
    from llamafoundry.data.filters.langid import bundled_model_path

    with pytest.raises(UserError, match="not a reference classifier"):
        ReferenceClassifier(model=str(bundled_model_path()))


# A process that keeps freed memory (as the model-step commands do) and has freed 600 MB of non-zero
# bytes: fastText used to train inside such a process on that memory and diverge.
DIRTY_HEAP_TRAINING = """
import ctypes, sys
from llamafoundry.allocator import keep_freed_memory
from llamafoundry.data.filters.classifier import train_classifier
assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
blocks = [libc.malloc(n << 20) for n in (600, 64, 8)]
for block, n in zip(blocks, (600, 64, 8)):
    ctypes.memset(block, 0x7F, n << 20)  # each float 3.4e38
for block in blocks:
    libc.free(block)
positives, negatives = sys.stdin.read().split("\\0")
print(train_classifier(positives.splitlines(), negatives.splitlines(), sys.argv[1]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc")
def test_training_does_not_read_the_memory_a_process_freed(tmp_path, pages):
    """fastText's initialisation writes a tenth of its input matrix and trains on the rest as allocated:
    zero pages from the kernel, not whatever the process freed before."""
    positives, negatives = pages
    done = subprocess.run(
        [sys.executable, "-c", DIRTY_HEAP_TRAINING, str(tmp_path / "wiki.bin")],
        input="\n".join(positives) + "\0" + "\n".join(negatives),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'train_precision'" in done.stdout and (tmp_path / "wiki.bin").stat().st_size > 0
