"""The toxicity stage (mitigation beyond the paper): what a scorer marks is dropped and counted, in batches,
alone and inside a recipe run with the offline scorer."""

from __future__ import annotations

import json

import pytest

from llamafoundry.data.document import Document
from llamafoundry.data.filters.toxicity import ToxicityFilter
from llamafoundry.data.pipeline import run_recipe
from llamafoundry.data.recipe import load_recipe
from llamafoundry.data.textio import read_shard
from llamafoundry.errors import UserError


class MarksShouting:
    """Scores 1.0 for text in capitals, 0.0 otherwise; records its batch sizes."""

    name = "scripted"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, texts):
        self.batches.append(len(texts))
        return [1.0 if t.isupper() else 0.0 for t in texts]


def test_drops_what_the_scorer_marks_in_batches():
    scorer = MarksShouting()
    stage = ToxicityFilter(scorer=scorer, batch_size=3)
    texts = ["calm words", "SHOUTING", "more calm", "ALSO LOUD", "fine", "ok", "quiet"]
    kept = list(stage(Document(f"d{i}", t, "web", {}) for i, t in enumerate(texts)))
    assert [d.text for d in kept] == ["calm words", "more calm", "fine", "ok", "quiet"]
    assert all(d.meta["toxicity"] == 0.0 for d in kept)
    assert scorer.batches == [3, 3, 1]
    assert (stage.stats.docs_in, stage.stats.docs_out, stage.stats.dropped) == (7, 5, {"toxic": 2})


@pytest.mark.parametrize(
    ("options", "message"), [({"threshold": 0}, "threshold"), ({"batch_size": 0}, "batch_size")]
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(UserError, match=message):
        ToxicityFilter(scorer=MarksShouting(), **options)


def test_a_recipe_filters_insults_with_the_offline_scorer(tmp_path, articles):
    raw = tmp_path / "raw"
    raw.mkdir()
    insults = ["You are a stupid worthless idiot and everyone hates you.", "Shut up, you pathetic moron."]
    texts = [" ".join(a[1:4]) for a in articles[:6]] + insults
    (raw / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[run]
output = "{tmp_path / "out"}"
[sources.web]
reader = "jsonl"
inputs = ["{raw}/*.jsonl"]
[[sources.web.stages]]
stage = "toxicity"
threshold = 0.5
""")
    report = run_recipe(load_recipe(recipe), workers=1, show_progress=False)
    step = report["sources"]["web"]["stages"][1]
    assert step["name"] == "toxicity" and step["dropped"] == {"toxic": 2}
    kept = list(read_shard(next((tmp_path / "out" / "web").glob("*.jsonl.zst"))))
    assert [d.text for d in kept] == texts[:6] and all(d.meta["toxicity"] < 0.5 for d in kept)
