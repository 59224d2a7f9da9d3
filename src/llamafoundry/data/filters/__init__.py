"""Filter stages (Sec. 2.1): dedup, language id, quality heuristics, perplexity, the Wikipedia-reference
classifier, licenses, and (beyond the paper) toxicity. A recipe names a stage by its key here; each is imported only when a run uses it."""

from __future__ import annotations

import importlib
import inspect

from llamafoundry.data.stage import Stage
from llamafoundry.errors import UserError

STAGES = {
    "line_dedup": "llamafoundry.data.filters.dedup:LineDedup",
    "exact_dedup": "llamafoundry.data.filters.dedup:ExactDedup",
    "minhash_dedup": "llamafoundry.data.filters.dedup:MinHashDedup",
    "langid": "llamafoundry.data.filters.langid:LanguageFilter",
    "c4_quality": "llamafoundry.data.filters.quality:C4Quality",
    "code_quality": "llamafoundry.data.filters.quality:CodeQuality",
    "license_header": "llamafoundry.data.filters.quality:LicenseHeaderStrip",
    "license": "llamafoundry.data.filters.license:LicenseFilter",
    "perplexity": "llamafoundry.data.filters.perplexity:PerplexityFilter",
    "wiki_classifier": "llamafoundry.data.filters.classifier:ReferenceClassifier",
    "toxicity": "llamafoundry.data.filters.toxicity:ToxicityFilter",
}


def stage_class(name: str) -> type[Stage]:
    """The stage class a recipe calls `name`."""
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def options_of(cls: type) -> list[str]:
    """The keyword options a stage or reader class takes (for checking recipes)."""
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "source")]


__all__ = ["STAGES", "Stage", "options_of", "stage_class"]
