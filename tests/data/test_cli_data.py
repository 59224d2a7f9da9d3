"""`llamafoundry data run`: a run from the command line, and one-line errors for bad recipes."""

from __future__ import annotations

import pytest

from llamafoundry.cli import main
from tests.data.helpers import crawl_pages, write_wet


@pytest.fixture
def recipe(tmp_path, articles):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_wet(raw / "CC-0.warc.wet.gz", crawl_pages(articles, 3))
    path = tmp_path / "recipe.toml"
    path.write_text(f"""
[run]
output = "{tmp_path / "out"}"
[sources.commoncrawl]
inputs = ["{raw}/*.warc.wet.gz"]
[[sources.commoncrawl.stages]]
stage = "line_dedup"
""")
    return path


def test_run_from_the_command_line(recipe, tmp_path, capsys):
    assert main(["data", "run", str(recipe), "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "commoncrawl: 3 documents" in out
    assert (tmp_path / "out/commoncrawl/CC-0.warc.wet.jsonl.zst").is_file()
    assert main(["data", "run", str(recipe), "--quiet", "--output", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere/report.json").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('stage = "line_dedup"', 'stage = "line_dedupe"'), "unknown stage 'line_dedupe'"),
        (lambda t: t + "min_chars = 3\n", "line_dedup has no option min_chars"),
        (lambda t: t.replace("*.warc.wet.gz", "*.warc.gz"), "matches no file"),
        (lambda t: t.replace("[run]", "[run\n"), "is not valid TOML"),
        (lambda t: t + "[mixture.books]\nweight = 1.0\n", "[mixture] names books"),
    ],
)
def test_bad_recipes_fail_with_one_line(recipe, capsys, change, message):
    recipe.write_text(change(recipe.read_text()))
    assert main(["data", "run", str(recipe), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_recipe_and_bad_worker_count(tmp_path, recipe, capsys):
    assert main(["data", "run", str(tmp_path / "nope.toml")]) == 2
    assert "recipe" in capsys.readouterr().err
    assert main(["data", "run", str(recipe), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
