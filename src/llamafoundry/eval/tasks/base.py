"""What every task shares: the `Task` contract, its result, data files, and seeded few-shot sampling."""

from __future__ import annotations

import abc
import csv
import gzip
import io
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import LM

Doc = dict[str, Any]

# Where a task's few-shot examples come from, as results.json and results.md name it.
TRAIN = "train"
DEV = "dev"
PAPER_EXEMPLARS = "paper exemplars"
EVALUATED_SPLIT = "evaluated split minus the example"


class Pool(list):
    """Few-shot examples (a list of docs) that name their `source` (TRAIN, DEV, PAPER_EXEMPLARS, ...).

    Fixed exemplars (PAPER_EXEMPLARS) are taken in their order, the first n of them, as the papers and
    lm-evaluation-harness's `first_n` sampler do; any other pool is drawn from per doc (`sample_shots`).
    """

    def __init__(self, docs: Sequence[Doc], source: str | None) -> None:
        super().__init__(docs)
        self.source = source


@dataclass
class TaskResult:
    """One task's outcome: aggregate metrics, the one comparable with the paper, and every example's scores."""

    task: str
    shots: int
    metrics: dict[str, float]
    paper_metric: str
    examples: list[dict] = field(default_factory=list)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. MMLU domains
    seconds: float = 0.0
    details: dict = field(default_factory=dict)  # how it ran: a code task's sandbox, a toxicity scorer...
    error: str | None = None  # the one-line reason the task could not run (the others still do)
    fewshot_source: str | None = None  # a Pool's source; None for a zero-shot run

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "shots": self.shots,
            "paper_metric": self.paper_metric,
            "metrics": self.metrics,
            "groups": self.groups,
            "n": len(self.examples),
            "seconds": self.seconds,
            "fewshot_source": self.fewshot_source,
            **self.details,
            **({"error": self.error} if self.error else {}),
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TaskResult:
        """The result `to_dict` wrote (a resumed run reads its finished tasks back)."""
        fields = ("task", "shots", "metrics", "paper_metric", "examples", "groups", "seconds")
        known = {*fields, "n", "error", "fewshot_source"}
        return cls(
            **{f: data[f] for f in fields},
            details={k: v for k, v in data.items() if k not in known},
            error=data.get("error"),
            fewshot_source=data.get("fewshot_source"),
        )


@dataclass(frozen=True)
class RunConfig:
    """Options that apply to every task of a run (the CLI's flags)."""

    shots: int | None = None  # None: the task's paper setting
    limit: int | float | None = None  # first N docs, or a fraction of them (lm-evaluation-harness's --limit)
    seed: int = 1234
    samples: int | None = None  # samples per problem for maj1@k / pass@k; None: the task's default
    max_new_tokens: int | None = None
    unsafe_no_sandbox: bool = False  # run generated code even where the sandbox lacks its minimum layers
    toxicity_scorer: Any = "profanity"  # a spec or a scorer object, see llamafoundry.toxicity.load_scorer
    judge: Any = None  # TruthfulQA's truthfulness judge: a spec or a judge, see eval/judges.py
    info_judge: Any = None  # its informativeness judge; None: the same as `judge`


class Task(abc.ABC):
    """A benchmark: loads its split, builds prompts, asks an `LM`, and scores with the paper's metric."""

    name: str
    paper_metric: str
    default_shots: int = 0

    @abc.abstractmethod
    def docs(self, data_dir: Path | None) -> list[Doc]:
        """The evaluation split (from `data_dir`, or the Hugging Face hub when it is None)."""

    def fewshot_pool(self, data_dir: Path | None) -> Pool | None:
        """The few-shot examples and their source: a train/dev split where the files have one, else the
        paper's fixed exemplars where its protocol has them; None: other docs of the evaluation split."""
        return None

    @abc.abstractmethod
    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        """Score `docs` (already limited); few-shot examples come from `pool`."""

    def shots(self, config: RunConfig) -> int:
        return self.default_shots if config.shots is None else config.shots

    def run(self, lm: LM, data_dir: Path | None, config: RunConfig) -> TaskResult:
        """Evaluate the (limited) split; the result names where its few-shot examples came from."""
        every = self.docs(data_dir)
        pool = Pool([], None)  # zero-shot: no source
        if self.shots(config):
            pool = self.fewshot_pool(data_dir) or self.evaluated_split_pool(every)
        result = self.evaluate(lm, self.limit(every, config.limit), pool, config)
        result.fewshot_source = pool.source
        return result

    def evaluated_split_pool(self, every: list[Doc]) -> Pool:
        """The last resort, never silent: other examples of the split being evaluated."""
        print(
            f"{self.name}: no train/dev split or paper exemplars for few-shot examples; drawing them "
            f"from the {EVALUATED_SPLIT} (recorded in results.json)",
            file=sys.stderr,
        )
        return Pool(every, EVALUATED_SPLIT)

    def limit(self, docs: list[Doc], limit: int | float | None) -> list[Doc]:
        return limit_docs(docs, limit)


def limit_docs(docs: list[Doc], limit: int | float | None) -> list[Doc]:
    if limit is None:
        return docs
    count = int(limit) if limit >= 1 else int(len(docs) * limit)
    return docs[:count]


def sample_shots(pool: Sequence[Doc], shots: int, seed: int, doc_id: str) -> list[Doc]:
    """`shots` examples for the doc `doc_id`, drawn by `seed` from `pool` (never the doc itself); the
    first `shots` of a pool of fixed exemplars, in order.

    Each doc gets its own generator seeded by (seed, doc id), so the draw does not depend on the
    order, the --limit, or which other tasks run.
    """
    candidates = [d for d in pool if d["id"] != doc_id]
    if shots > len(candidates):
        raise UserError(
            f"{shots} shots asked but the few-shot pool has only {len(candidates)} examples; "
            "use fewer --shots"
        )
    if getattr(pool, "source", None) == PAPER_EXEMPLARS:
        return candidates[:shots]
    return random.Random(f"{seed}:{doc_id}").sample(candidates, shots)


# ---- reading the official files ------------------------------------------------------------------------
def require(data_dir: Path, *relative: str) -> Path:
    """The first of `relative` that exists under `data_dir`, or a UserError naming what was expected."""
    for rel in relative:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise UserError(
        f"{data_dir / relative[0]} not found; point --data-dir at a folder with the benchmark "
        "files (layout of shared/data, see SOURCES.md) or omit it to download from the hub"
    )


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    return path.open(encoding="utf-8", newline="")


def read_jsonl(path: Path) -> list[dict]:
    with open_text(path) as f:
        rows = []
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"{path}:{number} is not valid JSON ({exc.msg}); the file is damaged"
                    ) from None
        return rows


def read_lines(path: Path) -> list[str]:
    with open_text(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def read_csv(
    path: Path, delimiter: str = ",", fieldnames: list[str] | None = None
) -> Iterator[dict[str, str]]:
    with open_text(path) as f:
        yield from csv.DictReader(f, fieldnames=fieldnames, delimiter=delimiter)


def from_hub(
    path: str, name: str | None, split: str, convert: Callable[[dict, int], Doc | None]
) -> list[Doc]:
    """Docs from the Hugging Face hub (needs network and the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            "reading benchmarks from the hub needs `pip install datasets`; or pass --data-dir"
        ) from None
    try:
        rows = datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # datasets raises many types for network and missing-config problems
        raise UserError(
            f"cannot load {path} ({name or 'default'}, {split}) from the hub: "
            f"{type(exc).__name__}; pass --data-dir with local files"
        ) from None
    docs = [convert(dict(row), i) for i, row in enumerate(rows)]
    return [d for d in docs if d is not None]


def nonempty(docs: list[Doc], path: Path | str) -> list[Doc]:
    if not docs:
        raise UserError(f"{path} holds no examples; check the file")
    return docs
