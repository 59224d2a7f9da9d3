"""A data recipe: a TOML file naming, per source, the reader, its inputs and its filter stages, where the
output goes, and the Table 1 mixture (`configs/data/llama.toml`, `configs/data/quickstart.toml`).

    [run]
    output = "runs/data/llama"          # <output>/<source>/<shard>.jsonl.zst + report.{json,md,png}

    [sources.commoncrawl]
    reader = "commoncrawl"              # default: the source's own name
    inputs = ["data/raw/cc/*.wet.gz"]   # globs; each file (or folder) is one shard
    group_size = 8                      # shards that share dedup memory (CCNet); 0 = all of them

    [[sources.commoncrawl.stages]]
    stage = "line_dedup"

    [[sources.commoncrawl.stages]]
    stage = "langid"
    languages = ["en"]

    [mixture.commoncrawl]
    weight = 0.67
    epochs = 1.10

A reader with options is a table: `[sources.github.reader]` with `type = "github"` and the options.
Paths may use `~`, `$VARS` and `{stdlib}` (this Python's standard library folder); relative paths are
relative to the working directory.
"""

from __future__ import annotations

import glob
import os
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamafoundry.data.filters import options_of, stage_class
from llamafoundry.data.mixture import SourceShare, parse_mixture
from llamafoundry.data.sources import reader_class
from llamafoundry.data.textio import strip_suffixes
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_toml


@dataclass(frozen=True)
class StageSpec:
    """A stage by its registry name and keyword options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shard:
    """One input (a file or a folder) and the shard name its output gets."""

    input: Path
    name: str


@dataclass
class SourceRecipe:
    """One `[sources.<name>]` table: reader, shards (inputs), stages, dedup group size."""

    name: str
    reader: StageSpec
    shards: list[Shard]
    stages: list[StageSpec]
    group_size: int = 0

    def groups(self) -> list[list[Shard]]:
        """The shards cut into dedup groups (in input order)."""
        size = self.group_size or len(self.shards)
        return [self.shards[i : i + size] for i in range(0, len(self.shards), size)]


@dataclass
class Recipe:
    """A whole recipe file, checked and with its inputs found."""

    path: Path
    output: Path
    sources: dict[str, SourceRecipe]
    mixture: dict[str, SourceShare] | None
    workers: int | None = None
    executor: str = "local"


def expand_path(text: str) -> str:
    """`~`, `$VARS` and `{stdlib}` expanded."""
    stdlib = sysconfig.get_paths()["stdlib"]
    return os.path.expanduser(os.path.expandvars(text.replace("{stdlib}", stdlib)))


def _shard_names(paths: list[Path]) -> list[str]:
    """Names for the outputs of `paths`: each path relative to their common folder, compression suffix
    dropped, `/` as `__` (stable across machines, distinct for distinct inputs)."""
    if len(paths) == 1:
        rels = [paths[0].name]
    else:
        common = Path(os.path.commonpath([str(p) for p in paths]))
        rels = [p.relative_to(common).as_posix() for p in paths]
    names = [re.sub(r"[^\w.-]+", "_", strip_suffixes(r).replace("/", "__")) for r in rels]
    return names


def _spec(entry: Any, key: str, where: str, registry_check) -> StageSpec:
    if isinstance(entry, str):
        entry = {key: entry}
    if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
        raise UserError(f'{where}: expected a table with {key} = "<name>"')
    options = {k: v for k, v in entry.items() if k != key}
    cls = registry_check(entry[key])
    accepted = options_of(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"{where}: {entry[key]} has no option {', '.join(unknown)}; "
            f"it takes {', '.join(accepted) or 'no options'}"
        )
    return StageSpec(entry[key], options)


def _source(name: str, table: Any, where: str) -> SourceRecipe:
    if not isinstance(table, dict):
        raise UserError(f"{where}: [sources.{name}] must be a table")
    unknown = sorted(set(table) - {"reader", "inputs", "stages", "group_size"})
    if unknown:
        raise UserError(
            f"{where}: [sources.{name}] has unknown keys {', '.join(unknown)} "
            "(it takes reader, inputs, stages, group_size)"
        )
    reader = _spec(table.get("reader", name), "type", f"{where} [sources.{name}] reader", reader_class)
    inputs = table.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise UserError(f'{where}: [sources.{name}] needs inputs = ["<path or glob>", ...]')
    paths: list[Path] = []
    for pattern in inputs:
        expanded = expand_path(pattern)
        matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            raise UserError(f"{where}: [sources.{name}] input {pattern!r} matches no file ({expanded})")
        paths.extend(Path(m) for m in matches)
    paths = list(dict.fromkeys(paths))
    if not isinstance(table.get("stages", []), list):
        raise UserError(
            f"{where}: [sources.{name}] stages must be a list of [[sources.{name}.stages]] tables"
        )
    stages = [
        _spec(s, "stage", f"{where} [sources.{name}] stage {i + 1}", stage_class)
        for i, s in enumerate(table.get("stages", []))
    ]
    group_size = table.get("group_size", 0)
    if not isinstance(group_size, int) or group_size < 0:
        raise UserError(f"{where}: [sources.{name}] group_size must be a whole number >= 0")
    shards = [Shard(p, n) for p, n in zip(paths, _shard_names(paths), strict=True)]
    return SourceRecipe(name, reader, shards, stages, group_size)


def load_recipe(path: str | os.PathLike, output: str | None = None) -> Recipe:
    """Read and check a recipe; inputs are globbed now, so a missing input is reported before any work."""
    path = Path(path)
    raw = read_toml(path, "recipe")
    run = raw.get("run", {})
    if not isinstance(run, dict):
        raise UserError(f"{path}: [run] must be a table")
    out = output or run.get("output")
    if not out or not isinstance(out, str | os.PathLike):
        raise UserError(f'{path}: no output folder; set [run] output = "..." or pass --output')
    sources_table = raw.get("sources")
    if not isinstance(sources_table, dict) or not sources_table:
        raise UserError(f"{path}: no [sources.<name>] table; a recipe needs at least one source")
    sources = {name: _source(name, table, str(path)) for name, table in sources_table.items()}
    mixture = parse_mixture(raw["mixture"], str(path)) if "mixture" in raw else None
    if mixture:
        missing = sorted(set(mixture) - set(sources))
        if missing:
            raise UserError(f"{path}: [mixture] names {', '.join(missing)}, which [sources] does not define")
    workers = run.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"{path}: [run] workers must be a whole number >= 1")
    executor = run.get("executor", "local")
    return Recipe(path, Path(expand_path(str(out))), sources, mixture, workers, executor)
