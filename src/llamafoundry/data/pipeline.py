"""Running a recipe (Sec. 2.1): each source's shards are read, passed through its stages and written as
JSONL.zst document shards, by a local process pool or by Ray; then the report.

Work is cut into shard groups (a group shares the dedup stages' memory, so one worker runs it in order);
groups run in parallel. Every shard is written atomically with its counts beside it
(`<shard>.stats.json`, with a fingerprint of the reader and stages), so a re-run of the same recipe skips
finished shards: when a group has dedup stages, its finished
shards are read again (not written) to rebuild what the dedup stages had seen, so that the output is the
same as an uninterrupted run's.

A perplexity stage with bucket `percentiles` gets its cut-offs from a sample pass before the run: its
source's shards, in a seeded random order, are read through the stages before it until `sample_docs`
documents reach it (one pass in this process, so every group cuts at the same perplexities, as CCNet's
one cut-off table per language does).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llamafoundry.data.document import Document
from llamafoundry.data.filters import stage_class
from llamafoundry.data.recipe import Recipe, Shard, SourceRecipe, StageSpec
from llamafoundry.data.sources import reader_class
from llamafoundry.data.stage import ShardResult, Stage, StageStats
from llamafoundry.data.textio import SHARD_SUFFIX, write_shard
from llamafoundry.errors import UserError
from llamafoundry.fileio import claim_run_dir, write_json

EXECUTORS = ("local", "ray")
STATS_SUFFIX = ".stats.json"
SAMPLE_SEED = 0  # the shard order of the perplexity sample pass


@dataclass
class GroupTask:
    """One unit of parallel work: a source's shard group, with everything a worker needs (picklable)."""

    source: str
    reader: StageSpec
    stages: list[StageSpec]
    shards: list[Shard]
    output: Path


def shard_path(output: Path, source: str, shard: str) -> Path:
    """`<output>/<source>/<shard>.jsonl.zst`."""
    return output / source / f"{shard}{SHARD_SUFFIX}"


def compose(
    stages: Iterable[Callable[[Iterable[Document]], Iterable[Document]]], docs: Iterable[Document]
) -> Iterable[Document]:
    """The documents after every stage in turn (lazily: one document flows through at a time)."""
    for stage in stages:
        docs = stage(docs)
    return docs


def build_stages(specs: list[StageSpec]) -> list[Stage]:
    """Stage objects from their specs; bad options are the user's error."""
    stages = []
    for spec in specs:
        try:
            stages.append(stage_class(spec.name)(**spec.options))
        except (TypeError, ValueError) as exc:
            raise UserError(f"stage {spec.name}: {exc}") from None
    return stages


def with_perplexity_cutoffs(recipe: Recipe) -> Recipe:
    """The recipe with `cutoffs` measured (see the module docstring) for every perplexity stage that has
    bucket `percentiles` and no cut-offs yet."""
    sources = {}
    for name, src in recipe.sources.items():
        stages = list(src.stages)
        for i, spec in enumerate(stages):
            if (
                spec.name == "perplexity"
                and spec.options.get("percentiles")
                and not spec.options.get("cutoffs")
            ):
                cutoffs = _sample_cutoffs(name, src, stages, i)
                if cutoffs is not None:  # nothing reached the stage: nothing to cut either
                    stages[i] = StageSpec(spec.name, {**spec.options, "cutoffs": cutoffs})
        sources[name] = replace(src, stages=stages)
    return replace(recipe, sources=sources)


def _sample_cutoffs(source: str, src: SourceRecipe, stages: list[StageSpec], i: int) -> list[float] | None:
    reader = _reader(src.reader, source)
    before = build_stages(stages[:i])
    stage = build_stages([stages[i]])[0]
    shards = list(src.shards)
    random.Random(SAMPLE_SEED).shuffle(shards)
    return stage.measure(compose(before, (doc for s in shards for doc in reader.read(s.input))))


def _reader(spec: StageSpec, source: str):
    try:
        return reader_class(spec.name)(source=source, **spec.options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"reader {spec.name}: {exc}") from None


def fingerprint(task: GroupTask) -> str:
    """What a shard's content depends on besides its input: the reader and stages with their options. A
    shard written under another fingerprint (the recipe changed) is not finished for this run."""
    spec = {
        "reader": [task.reader.name, task.reader.options],
        "stages": [[s.name, s.options] for s in task.stages],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished(out: Path, stats_file: Path, recipe_key: str) -> bool:
    if not (out.is_file() and stats_file.is_file()):
        return False
    try:
        return json.loads(stats_file.read_text())["recipe"] == recipe_key
    except (ValueError, KeyError):
        return False


def _reset(stats_holders: list[Any], names: list[str]) -> None:
    for holder, name in zip(stats_holders, names, strict=True):
        holder.stats = StageStats(name)


def run_group(task: GroupTask, progress: Any = None) -> list[ShardResult]:
    """Process one shard group in order; `progress` (a queue) gets (docs, bytes) after each shard."""
    reader = _reader(task.reader, task.source)
    stages = build_stages(task.stages)
    holders = [reader, *stages]
    names = ["read", *(s.name for s in stages)]
    last_stateful = max((i for i, s in enumerate(stages) if s.stateful), default=-1)
    recipe_key = fingerprint(task)
    results = []
    for shard in task.shards:
        out = shard_path(task.output, task.source, shard.name)
        stats_file = out.with_name(out.name[: -len(SHARD_SUFFIX)] + STATS_SUFFIX)
        if _finished(out, stats_file, recipe_key):
            if last_stateful >= 0:  # replay up to the last dedup stage: its memory must include this shard
                for _ in compose(stages[: last_stateful + 1], reader.read(shard.input)):
                    pass
            stats = [StageStats.from_dict(d) for d in json.loads(stats_file.read_text())["stats"]]
            results.append(ShardResult(task.source, shard.name, stats, skipped=True))
        else:
            _reset(holders, names)
            write_shard(out, compose(stages, reader.read(shard.input)))
            stats = [h.stats for h in holders]
            record = {"input": str(shard.input), "recipe": recipe_key, "stats": [s.to_dict() for s in stats]}
            write_json(stats_file, record)
            results.append(ShardResult(task.source, shard.name, stats, skipped=False))
        if progress is not None:
            progress.put((stats[-1].docs_out, stats[0].bytes_out))
    return results


def plan(recipe: Recipe) -> list[GroupTask]:
    """The recipe's shard groups, those with the most input bytes first (they take longest; a folder
    input counts as large, since sizing it would mean walking it)."""
    tasks = [
        GroupTask(name, src.reader, src.stages, group, recipe.output)
        for name, src in recipe.sources.items()
        for group in src.groups()
    ]
    return sorted(tasks, key=lambda t: -sum(_size(s.input) for s in t.shards))


def _is_unmarked_data_run(folder: Path) -> bool:
    """A data run from before output markers: it holds a shard's counts (<source>/<shard>.stats.json)."""
    return any(folder.glob(f"*/*{STATS_SUFFIX}"))


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 1 << 40


# Set in each pool worker by _init_worker, so that run_group can report progress per shard.
_worker_progress: Any = None


def _init_worker(progress: Any) -> None:
    global _worker_progress
    _worker_progress = progress


def _run_group_in_worker(task: GroupTask) -> list[ShardResult]:
    return run_group(task, _worker_progress)


def run_local(
    tasks: list[GroupTask], workers: int, on_shard: Callable[[int, int], None]
) -> Iterator[list[ShardResult]]:
    """Groups on a pool of `workers` processes (spawned: fresh interpreters, nothing inherited), or in
    this process when `workers` is 1."""
    if workers <= 1 or len(tasks) <= 1:
        progress: queue.SimpleQueue = queue.SimpleQueue()
        for task in tasks:
            results = run_group(task, progress)
            while not progress.empty():
                on_shard(*progress.get())
            yield results
        return
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    with ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=context, initializer=_init_worker, initargs=(progress,)
    ) as pool:
        pending = {pool.submit(_run_group_in_worker, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(progress, on_shard)
                for future in done:
                    yield future.result()
        except BaseException:
            # A failed group (or Ctrl-C) stops the run: groups not started are not started.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        _drain(progress, on_shard)


def _drain(progress: Any, on_shard: Callable[[int, int], None]) -> None:
    while True:
        try:
            on_shard(*progress.get_nowait())
        except queue.Empty:
            return


def run_ray(
    tasks: list[GroupTask], workers: int | None, address: str | None, on_shard: Callable[[int, int], None]
) -> Iterator[list[ShardResult]]:
    """Groups as Ray tasks, one CPU each: on a cluster (`address`, e.g. "auto") or on a local Ray instance
    of `workers` CPUs started (and stopped) here."""
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_group)
        pending = [remote.remote(task) for task in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results = ray.get(done[0])
            for r in results:
                on_shard(r.stats[-1].docs_out, r.stats[0].bytes_out)
            yield results
    finally:
        if started:
            ray.shutdown()


def run_recipe(
    recipe: Recipe,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run every source of `recipe`; write the shards and the report; return the report.

    The output folder is a run folder: new or empty, or this recipe's earlier run, which continues.
    """
    from tqdm import tqdm

    from llamafoundry.data.report import write_pipeline_report

    executor = executor or recipe.executor
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    claim_run_dir(recipe.output, "data run", recognise=_is_unmarked_data_run)
    workers = workers or recipe.workers or os.cpu_count() or 1
    recipe = with_perplexity_cutoffs(recipe)
    tasks = plan(recipe)
    shard_count = sum(len(t.shards) for t in tasks)
    bar = tqdm(total=shard_count, unit="shard", desc="data", disable=not show_progress)
    totals = {"docs": 0, "bytes": 0}

    def on_shard(docs: int, nbytes: int) -> None:
        totals["docs"] += docs
        totals["bytes"] += nbytes
        bar.update(1)
        bar.set_postfix(docs_out=totals["docs"], MB_read=f"{totals['bytes'] / 1e6:.1f}")

    runner = (
        run_local(tasks, workers, on_shard)
        if executor == "local"
        else run_ray(tasks, workers, ray_address, on_shard)
    )
    results = [r for group in runner for r in group]
    bar.close()
    return write_pipeline_report(recipe, results)
