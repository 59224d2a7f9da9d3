"""A toxicity filter (beyond the paper: the mitigation its Sec. 5 leaves to future work): drop documents a
toxicity scorer (`llamafoundry.toxicity`: the offline profanity model, an HF classifier folder, the
Perspective API) scores at `threshold` or more. The score goes to `meta["toxicity"]`; the report counts
the drops under "toxic"."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from llamafoundry.data.document import Document
from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError
from llamafoundry.toxicity import TOXIC, load_scorer


class ToxicityFilter(Stage):
    """Keeps documents scoring below `threshold`; scores `batch_size` documents at a time."""

    name = "toxicity"

    def __init__(self, scorer: str = "profanity", threshold: float = TOXIC, batch_size: int = 64) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise UserError(f"toxicity threshold must be in (0, 1], got {threshold}")
        if batch_size < 1:
            raise UserError(f"toxicity batch_size must be at least 1, got {batch_size}")
        self.scorer, self.threshold, self.batch_size = load_scorer(scorer), threshold, batch_size
        self._scores: Iterator[float] = iter(())

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        docs = iter(docs)
        while batch := list(itertools.islice(docs, self.batch_size)):
            self._scores = iter(self.scorer.score([d.text for d in batch]))
            yield from super().__call__(batch)

    def apply(self, doc: Document) -> Document | str:
        score = next(self._scores)
        doc.meta["toxicity"] = round(score, 4)
        return doc if score < self.threshold else "toxic"
