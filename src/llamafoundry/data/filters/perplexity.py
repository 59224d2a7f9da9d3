"""The CCNet quality filter (Sec. 2.1: "filter low quality content with an n-gram language model"):
documents whose perplexity under a reference language model (trained on Wikipedia) is too high are
dropped.

Two kinds of reference model:
- a KenLM n-gram model (`.arpa`, or KenLM's binary format), as CCNet: each line is normalised like
  CCNet's (lowercase, accents stripped, digits to 0, Unicode punctuation made ASCII), optionally cut into
  SentencePiece pieces (`tokenizer`, as CCNet's models expect), and perplexity is
  10 ** (-sum of log10 probabilities / (words + one end-of-line per line));
- one of our own trained models (a model folder `load_model` reads): perplexity per character,
  exp(total negative log-likelihood / characters), comparable across tokenizers.

Documents are dropped above a fixed `max_perplexity`, or cut into CCNet's buckets: head / middle / tail
at perplexity percentiles (CCNet's 30th and 60th) measured on a sample of the stage's input before the
run (`data run` makes that sample pass; the cut-offs go into the report), the bucket written to
`meta["bucket"]`. CCNet itself drops no bucket: its `mine` writes each language's head, middle and tail
to their own files (`keep_bucket` empty by default; its `reproduce` example keeps only head), so
`keep` defaults to all three.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.filters.dedup import UNICODE_PUNCT
from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError

KENLM_MAGIC = b"mmap lm http://kheafield.com/code"
BUCKETS = ("head", "middle", "tail")  # CCNet's, from low perplexity (most Wikipedia-like) to high
SAMPLE_DOCS = 10_000  # documents in the sample pass that measures the bucket cut-offs
# CCNet's replace_unicode_punct targets, in the order of dedup.UNICODE_PUNCT.
_PUNCT_ASCII = [
    ",",
    ".",
    ",",
    '"',
    '"',
    '"',
    '"',
    '"',
    '"',
    '"',
    '"',
    '"',
    '"',
    "'",
    ":",
    ":",
    "?",
    "!",
    "(",
    ")",
    ";",
    "-",
    " - ",
    ". ",
    "~",
    "'",
    "...",
    "-",
    "<",
    ">",
    "[",
    "]",
    "%",
    "-",
]
_PUNCT_TABLE = str.maketrans(dict(zip(UNICODE_PUNCT, _PUNCT_ASCII, strict=True)))
_NON_PRINTING = str.maketrans({c: None for c in [*range(0, 32), *range(127, 160)]})
_DIGIT = re.compile(r"\d")
_KENLM_REASON = re.compile(r"^\S+:\d+ in .*? threw \w+\. ")


def normalize_for_lm(line: str) -> str:
    """CCNet's `normalize(line)` before its language models: strip, lowercase, accents removed, digits to
    0, Unicode punctuation to ASCII, control characters removed."""
    line = line.strip().lower()
    if not line:
        return line
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGIT.sub("0", line)
    return line.translate(_PUNCT_TABLE).translate(_NON_PRINTING)


def is_kenlm_file(path: Path) -> bool:
    """A KenLM model: ARPA text (starts with `\\data\\`) or KenLM's binary format (its magic header);
    anything else is taken for one of our model folders or files."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(len(KENLM_MAGIC))
    return head == KENLM_MAGIC or head.lstrip().startswith(b"\\data\\")


def _load_kenlm(kenlm, path: Path):
    """KenLM's model at `path`; a file KenLM cannot read (cut short, damaged, not a model) is a
    UserError naming KenLM's reason, not its OSError."""
    try:
        return kenlm.Model(str(path))
    except OSError as exc:
        # "Cannot read model 'PATH' (REASON)", REASON maybe after a C++ source location: REASON, on one line.
        reason = " ".join(str(exc).split())
        reason = _KENLM_REASON.sub("", reason.removeprefix(f"Cannot read model '{path}' (").removesuffix(")"))
        raise UserError(
            f"perplexity model {path} is not a usable KenLM file ({reason}); rebuild it "
            "(llamafoundry data train-reference-lm) or give another model"
        ) from None


class KenLMScorer:
    """Perplexity of a document under a KenLM model, the CCNet way (see the module docstring)."""

    def __init__(self, path: Path, tokenizer: str | None = None) -> None:
        try:
            import kenlm
        except ImportError:
            raise UserError(
                "a KenLM model needs the kenlm module: pip install kenlm (it compiles KenLM); "
                "or give one of our model folders as the perplexity model"
            ) from None
        self.model = _load_kenlm(kenlm, path)
        self.sp = None
        if tokenizer:
            import sentencepiece

            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))

    def perplexity(self, text: str) -> float:
        """10 ** (-log10 probability per word and end of line), over the lines of `text`."""
        log_score, length = 0.0, 0
        for raw in text.split("\n"):
            line = normalize_for_lm(raw)
            if not line:
                continue
            if self.sp is not None:
                line = " ".join(self.sp.encode(line, out_type=str))
            log_score += self.model.score(line, bos=True, eos=True)
            length += len(line.split()) + 1
        return 10.0 ** (-log_score / length) if length else math.inf


class ModelScorer:
    """Per-character perplexity of a document under one of our models (any folder `load_model` reads)."""

    def __init__(self, path: str, max_tokens: int | None = None) -> None:
        from llamafoundry.checkpoint import load_model

        self.model, self.tokenizer, cfg = load_model(path)
        if self.tokenizer is None:
            raise UserError(
                f"{path} has no tokenizer.model; the perplexity filter needs the model's tokenizer"
            )
        self.window = max_tokens or cfg.max_seq_len

    def nll(self, text: str) -> float:
        """Total negative log-likelihood (nats) of the text's tokens after BOS, in windows of
        `max_tokens` that overlap by one token, so that every token is predicted exactly once."""
        from llamafoundry.inference.perplexity import negative_log_likelihood

        ids = self.tokenizer.encode(text, bos=True)
        return negative_log_likelihood(self.model, ids, window=self.window - 1)[0]

    def perplexity(self, text: str) -> float:
        """exp(negative log-likelihood per character)."""
        return math.exp(self.nll(text) / max(1, len(text)))


def cutoffs_at(perplexities: Sequence[float], percentiles: Sequence[float]) -> list[float]:
    """The perplexities at `percentiles` (0-100) of a sample, numpy's linear interpolation."""
    import numpy as np

    return [float(v) for v in np.percentile(np.asarray(perplexities, dtype=np.float64), percentiles)]


def bucket_of(perplexity: float, cutoffs: Sequence[float]) -> str:
    """CCNet's bucket: head below the first cut-off, middle below the second, tail from there up."""
    head, tail = cutoffs
    if perplexity < head:
        return "head"
    return "middle" if perplexity < tail else "tail"


def _check_buckets(
    percentiles: Sequence[float] | None, cutoffs: Sequence[float] | None, keep: Sequence[str]
) -> None:
    for name, pair, top in (("percentiles", percentiles, 100), ("cutoffs", cutoffs, math.inf)):
        if pair is None:
            continue
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(v, int | float) and 0 <= v <= top for v in pair)
            or pair[0] > pair[1]
        ):
            raise UserError(
                f"perplexity stage: {name} must be two increasing numbers"
                + (" from 0 to 100 (CCNet: [30, 60])" if top == 100 else " >= 0")
                + f", got {pair!r}"
            )
    unknown = sorted(set(keep) - set(BUCKETS))
    if unknown or not keep:
        raise UserError(f"perplexity stage: keep must name some of {', '.join(BUCKETS)}; got {list(keep)!r}")


class PerplexityFilter(Stage):
    """Scores each document under `model` (`meta["perplexity"]`), then drops it above `max_perplexity`
    and/or buckets it (`meta["bucket"]`) at `cutoffs`, keeping the buckets in `keep`.

    `model`: a KenLM file or our model folder; `tokenizer`: the SentencePiece model a KenLM model was
    trained on (CCNet's), if any. `percentiles`: where to cut, measured by `measure` on the first
    `sample_docs` documents of the stage's input (the `data run` sample pass), unless `cutoffs` (the
    perplexities themselves, e.g. from an earlier run's report) are given.
    """

    name = "perplexity"

    def __init__(
        self,
        model: str,
        max_perplexity: float | None = None,
        tokenizer: str | None = None,
        percentiles: list[float] | None = None,
        cutoffs: list[float] | None = None,
        keep: Sequence[str] = BUCKETS,
        sample_docs: int = SAMPLE_DOCS,
    ) -> None:
        super().__init__()
        _check_buckets(percentiles, cutoffs, keep)
        if not isinstance(sample_docs, int) or sample_docs < 1:
            raise UserError(f"perplexity stage: sample_docs must be at least 1, got {sample_docs!r}")
        path = Path(model).expanduser()
        if not path.exists():
            raise UserError(f"perplexity model {path} not found")
        self.scorer = KenLMScorer(path, tokenizer) if is_kenlm_file(path) else ModelScorer(str(path))
        self.max_perplexity = max_perplexity
        self.percentiles = percentiles
        self.cutoffs = cutoffs
        self.keep = set(keep)
        self.sample_docs = sample_docs

    def measure(self, docs: Iterable[Document]) -> list[float] | None:
        """Set the bucket cut-offs to `percentiles` of the perplexities of the first `sample_docs` of
        `docs`, and return them (None when `docs` is empty)."""
        sample = []
        for doc in docs:
            sample.append(self.scorer.perplexity(doc.text))
            if len(sample) >= self.sample_docs:
                break
        self.cutoffs = cutoffs_at(sample, self.percentiles) if sample else None
        return self.cutoffs

    def apply(self, doc: Document) -> Document | str:
        ppl = self.scorer.perplexity(doc.text)
        doc.meta["perplexity"] = round(ppl, 3)
        if self.percentiles is not None and self.cutoffs is None:
            raise UserError(
                "perplexity stage: percentiles need a sample pass first (measure, as data run does)"
            )
        if self.cutoffs is not None:
            bucket = bucket_of(ppl, self.cutoffs)
            doc.meta["bucket"] = bucket
            self.stats.tallies[f"perplexity bucket {bucket}"] += 1
            if bucket not in self.keep:
                return f"perplexity in the {bucket} bucket"
        if self.max_perplexity is not None and ppl > self.max_perplexity:
            return "perplexity too high"
        return doc
