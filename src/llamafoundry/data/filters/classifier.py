"""The Wikipedia-reference classifier (Sec. 2.1): "we trained a linear model to classify pages used as
references in Wikipedia v.s. randomly sampled pages, and discarded pages not classified as references."

The linear model is a fastText supervised classifier (word and n-gram embeddings averaged, a linear
layer): `train_classifier` fits it on two sets of documents (e.g. the CommonCrawl pages that Wikipedia
cites as positives, random CommonCrawl pages as negatives), `ReferenceClassifier` is the filter stage.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from llamafoundry.allocator import keep_large_blocks_fresh
from llamafoundry.data.document import Document
from llamafoundry.data.filters.langid import load_fasttext
from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError
from llamafoundry.fileio import check_output, output_file

POSITIVE, NEGATIVE = "__label__wiki", "__label__random"
_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")  # the first int32 of every fastText model file
_SPACES = re.compile(r"\s+")


def fasttext_line(text: str, max_chars: int = 20_000) -> str:
    """A document as fastText reads it: one line, whitespace collapsed, lowercased, cut to `max_chars`."""
    return _SPACES.sub(" ", text[:max_chars]).strip().lower()


@dataclass
class ClassifierConfig:
    """fastText training settings (fastText's defaults for text classification, bigrams added).

    fastText's 2M hash buckets of 64 floats make a 512 MB file whatever the data; quantization (product
    quantization of the `cutoff` rows, of words and n-gram buckets, that matter most, then a retraining
    pass) makes it 0.9 MB. On 200 + 200 training documents, held out: precision 0.941, recall 0.950
    quantized, 0.916 and 0.843 not. (Fewer buckets instead: fastText's training then stopped on NaN in some
    runs, at 100k buckets and below, in none at 2M; most likely the uninitialised memory that
    `_fit_in_fresh_process` explains, which a matrix of 2M buckets always got fresh. Not measured again.)
    """

    epochs: int = 10
    lr: float = 0.5
    word_ngrams: int = 2
    dim: int = 64
    min_count: int = 2
    seed: int = 0
    quantize: bool = True  # the .ftz-style file; False: fastText's full matrices
    cutoff: int = 20_000  # rows kept by quantization (fastText's -cutoff)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise UserError(f"invalid classifier settings: {problem}")

    def _problem(self) -> str | None:
        for name in ("epochs", "word_ngrams", "dim", "min_count", "cutoff"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                return f"{name} must be at least 1, got {value!r}"
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            return f"lr must be a finite number > 0, got {self.lr!r}"
        return None


def train_classifier(
    positives: Iterable[str],
    negatives: Iterable[str],
    output: str | os.PathLike,
    config: ClassifierConfig | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, float]:
    """Train the reference classifier and write it to `output` (atomically; an existing file only with
    `overwrite`, and only a fastText model). Returns the numbers of examples and the training-set
    precision/recall fastText reports."""
    import fasttext

    check_output(output, overwrite=overwrite, folder=False, recognise=_is_fasttext_model)

    if not hasattr(fasttext, "train_supervised"):
        raise UserError(
            "this fasttext module cannot train (it is fasttext-predict's); "
            "pip install --force-reinstall --no-deps fasttext-numpy2-wheel"
        )
    config = config or ClassifierConfig()
    examples = [f"{POSITIVE} {fasttext_line(t)}" for t in positives if t.strip()]
    n_pos = len(examples)
    examples += [f"{NEGATIVE} {fasttext_line(t)}" for t in negatives if t.strip()]
    n_neg = len(examples) - n_pos
    if not n_pos or not n_neg:
        raise UserError(
            f"training the classifier needs positive and negative documents "
            f"(got {n_pos} positive, {n_neg} negative)"
        )
    random.Random(config.seed).shuffle(examples)
    with tempfile.TemporaryDirectory(prefix="llamafoundry-cls-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("\n".join(examples) + "\n", encoding="utf-8")
        with output_file(output, overwrite=overwrite, recognise=_is_fasttext_model) as tmp_model:
            precision, recall = _fit_in_fresh_process(train_file, config, Path(tmp_model))
    return {"positives": n_pos, "negatives": n_neg, "train_precision": precision, "train_recall": recall}


def _fit_in_fresh_process(
    train_file: Path, config: ClassifierConfig, model_file: Path
) -> tuple[float, float]:
    """Train (and quantize) the classifier into `model_file` in a fresh interpreter; its training-set
    precision and recall.

    fastText reads memory it never wrote: its initialisation fills `thread` tenths of the input matrix
    with noise (one tenth here: one thread keeps training reproducible) and trains the rest as allocated,
    which only fresh pages from the kernel make zero. Handed reused heap memory (this process may keep
    freed memory, see allocator.py, or have freed a block of that size), training diverged
    ("Encountered NaN.") in 2 of 8 test runs. A fresh process that maps every large block anew (`_fit`)
    gives it zeros, as a fresh `fasttext` command would.
    """
    request = {"train_file": str(train_file), "model_file": str(model_file), "config": asdict(config)}
    done = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import _fit; _fit()"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the classifier's training process failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.splitlines()[-1])  # the last line: anything fastText printed comes before
    if "diverged" in result:  # how fastText reports divergence: "Encountered NaN."
        raise UserError(f"training the classifier diverged ({result['diverged']}); lower the learning rate")
    return result["precision"], result["recall"]


def _fit() -> None:
    """The fresh process of `_fit_in_fresh_process`: the request as JSON on stdin, the result on stdout."""
    keep_large_blocks_fresh()
    import fasttext

    request = json.load(sys.stdin)
    config, train_file = ClassifierConfig(**request["config"]), request["train_file"]
    try:
        model = fasttext.train_supervised(
            input=train_file,
            epoch=config.epochs,
            lr=config.lr,
            wordNgrams=config.word_ngrams,
            dim=config.dim,
            minCount=config.min_count,
            seed=config.seed,
            thread=1,
            verbose=0,
        )
        if config.quantize:
            model.quantize(
                input=train_file, retrain=True, cutoff=config.cutoff, qnorm=True, thread=1, verbose=0
            )
    except RuntimeError as exc:
        print(json.dumps({"diverged": str(exc)}))
        return
    _, precision, recall = model.test(train_file)
    model.save_model(request["model_file"])
    print(json.dumps({"precision": precision, "recall": recall}))


def _is_fasttext_model(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _FASTTEXT_MAGIC


class ReferenceClassifier(Stage):
    """Keeps pages the classifier scores as Wikipedia-reference-like: P(wiki) >= `threshold`; the score
    goes to `meta["wiki_score"]`."""

    name = "wiki_classifier"

    def __init__(self, model: str, threshold: float = 0.5) -> None:
        super().__init__()
        self.model = load_fasttext(Path(model).expanduser())
        labels = set(self.model.getLabels("replace")[0])
        if POSITIVE not in labels:
            raise UserError(
                f"{model} is not a reference classifier (labels {sorted(labels)}); "
                "train one with `llamafoundry data train-classifier`"
            )
        self.threshold = threshold

    def score(self, text: str) -> float:
        """P(the page is like a Wikipedia reference)."""
        for prob, label in self.model.predict(fasttext_line(text), -1, 0.0, "replace"):
            if label == POSITIVE:
                return min(1.0, float(prob))
        return 0.0

    def apply(self, doc: Document) -> Document | str:
        score = self.score(doc.text)
        doc.meta["wiki_score"] = round(score, 4)
        return doc if score >= self.threshold else "not like a Wikipedia reference"
