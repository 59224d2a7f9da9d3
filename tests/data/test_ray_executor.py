"""The Ray executor: the same recipe on a local Ray instance gives the local run's shards, byte for byte."""

from __future__ import annotations

import pytest

from llamafoundry.data.pipeline import run_recipe
from llamafoundry.data.recipe import load_recipe
from tests.data.helpers import crawl_pages, write_wet


@pytest.mark.slow
def test_ray_and_local_runs_write_identical_shards(tmp_path, articles):
    raw = tmp_path / "raw"
    raw.mkdir()
    pages = crawl_pages(articles, 9)
    for i in range(3):
        write_wet(raw / f"CC-{i}.warc.wet.gz", pages[3 * i : 3 * i + 3])
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[run]
output = "{tmp_path / "local"}"
[sources.commoncrawl]
inputs = ["{raw}/*.warc.wet.gz"]
group_size = 2
[[sources.commoncrawl.stages]]
stage = "line_dedup"
[[sources.commoncrawl.stages]]
stage = "c4_quality"
""")
    local = run_recipe(load_recipe(recipe), executor="local", workers=2, show_progress=False)
    ray_report = run_recipe(
        load_recipe(recipe, output=str(tmp_path / "ray")), executor="ray", workers=2, show_progress=False
    )
    shards = lambda root: {p.name: p.read_bytes() for p in sorted(root.rglob("*.jsonl.zst"))}  # noqa: E731
    assert len(shards(tmp_path / "local")) == 3
    assert shards(tmp_path / "ray") == shards(tmp_path / "local")
    assert ray_report["sources"] == local["sources"]
