"""`llamafoundry eval MODEL --paper`: every task of the paper's Tables 3-9 with its shots, k and metrics,
resumable per task, with an estimate of the total time before it starts.

A run folder (kind PAPER_RUN) holds `settings.json` (what the numbers depend on), one file per finished
task under `tasks/`, each written atomically as the task ends, and, once every task has run, the reports
`results.json` and `results.md`. A rerun with the same folder and settings skips finished tasks (and
says so); a killed run thus continues with the task it was in. A task that failed is not saved: the rerun
tries it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.errors import UserError
from llamafoundry.eval import report
from llamafoundry.eval.evaluator import evaluate
from llamafoundry.eval.lm import LM, TokenLM
from llamafoundry.eval.tasks import TASKS
from llamafoundry.eval.tasks.base import RunConfig, Task, TaskResult
from llamafoundry.eval.tasks.code import TEMPERATURES, CodeTask
from llamafoundry.inference.sampling import SamplingParams

PAPER_RUN = "paper evaluation"
# (table, task, shots) for every column group of Tables 3-9; k and metrics are each task's defaults.
PAPER_RUNS: tuple[tuple[int, str, int], ...] = (
    *((3, t, 0) for t in ("boolq", "piqa", "siqa", "hellaswag", "winogrande")),
    *((3, t, 0) for t in ("arc_easy", "arc_challenge", "openbookqa")),
    *((4, "nq_open", k) for k in (0, 1, 5, 64)),
    *((5, "triviaqa", k) for k in (0, 1, 5, 64)),
    (6, "race_middle", 0),
    (6, "race_high", 0),
    (7, "gsm8k", 8),
    (7, "math", 4),
    (8, "humaneval", 0),
    (8, "mbpp", 3),
    (9, "mmlu", 5),
)


def task_file(folder: Path, task: str, shots: int) -> Path:
    return folder / "tasks" / f"{task}-{shots}shot.json"


def run_paper(
    lm: LM, data_dir: Path | None, config: RunConfig, folder: Path, settings: dict
) -> list[TaskResult]:
    """Every run of PAPER_RUNS not finished in `folder` yet, each saved as it ends; all results, in order."""
    claim(folder, settings)
    todo = [(t, s) for _, t, s in PAPER_RUNS if not task_file(folder, t, s).is_file()]
    done = len(PAPER_RUNS) - len(todo)
    if done:
        say(f"{done} of {len(PAPER_RUNS)} paper runs finished in an earlier run of {folder}; skipping them")
    if todo:
        say(estimate(lm, data_dir, config, todo))
    results = []
    for number, (table, name, shots) in enumerate(PAPER_RUNS, start=1):
        path = task_file(folder, name, shots)
        if path.is_file():
            say(f"[{number}/{len(PAPER_RUNS)}] Table {table}: {name} {shots}-shot: done earlier, skipped")
            results.append(TaskResult.from_dict(json.loads(path.read_text(encoding="utf-8"))))
            continue
        say(f"[{number}/{len(PAPER_RUNS)}] Table {table}: {name} {shots}-shot")
        (result,) = evaluate(lm, [TASKS[name]], data_dir, config, shots=[shots])
        if result.error is None:  # a failed task is tried again by the next run
            fileio.write_json(path, result.to_dict())
        results.append(result)
    report.write_json(folder / "results.json", results, {**settings, "paper": True})
    report.write_markdown(folder / "results.md", results, settings["model"])
    return results


def claim(folder: Path, settings: dict) -> None:
    """Make `folder` this run's folder, or resume in it when an earlier run there had the same settings."""
    fileio.claim_run_dir(folder, PAPER_RUN)
    path = folder / "settings.json"
    if not path.is_file():
        fileio.write_json(path, settings)
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
    if changed:
        raise UserError(
            f"{folder} holds a paper run with other settings ({', '.join(changed)} differ); resume it "
            "with the same flags, or choose a new --output folder"
        )


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- the estimate ------------------------------------------------------------------------------------
class RecordingLM(LM):
    """Records what a task asks of a model and answers with placeholders (no model runs)."""

    name = "recording"

    def __init__(self, stop_after_generate: bool = False) -> None:
        self.scored: list[tuple[str, str]] = []
        self.generated: list[tuple[str, SamplingParams]] = []
        self.stop_after_generate = stop_after_generate

    def loglikelihood(self, requests, desc=None):
        self.scored += requests
        return [(0.0, False)] * len(requests)

    def generate(self, requests, desc=None):
        self.generated += requests
        if self.stop_after_generate:
            raise _Recorded
        return [""] * len(requests)


class _Recorded(Exception):
    """Ends a recording where the rest of a task would cost real work (code tasks: the sandbox)."""


def requests_of(task: Task, data_dir: Path | None, config: RunConfig) -> tuple[RecordingLM, int]:
    """What `task` will ask of the model, and how many times over (code tasks are recorded at their
    first temperature: every temperature samples the same prompts as often)."""
    code = isinstance(task, CodeTask)
    lm = RecordingLM(stop_after_generate=code)
    # The run itself prints the task's notices (a few-shot source, say); once is enough.
    with contextlib.suppress(_Recorded), contextlib.redirect_stderr(io.StringIO()):
        task.run(lm, data_dir, config)
    return lm, len(TEMPERATURES) if code else 1


def estimate(lm: LM, data_dir: Path | None, config: RunConfig, runs: Sequence[tuple[str, int]]) -> str:
    """One line: the time the runs should take on `lm`, from their token counts and a short timing.

    The runs' requests are recorded by running each task against `RecordingLM`, and counted in tokens:
    scored tokens (each distinct context once, as packed scoring does, plus every continuation), and for
    generation the prompt tokens plus `max_new_tokens` per request, in batches of the LM's rows per
    generation batch (a decode step costs about the same at any batch size while memory-bound). The model
    is then timed on a few of those requests: seconds per scored token, and per decode step of one batch.
    Generation usually stops early (a stop string, EOS), so that part is an upper bound.
    """
    scored = prompt_tokens = steps = 0
    rows = int(getattr(lm, "max_batch", 0) or getattr(lm, "batch_size", 1))
    some_scored: list[tuple[str, str]] = []
    some_prompts: list[str] = []
    for name, shots in runs:
        try:
            recorded, times = requests_of(TASKS[name], data_dir, dataclasses.replace(config, shots=shots))
        except UserError:
            continue  # the run itself will fail with this error, and cost nothing
        contexts = list(dict.fromkeys(c for c, _ in recorded.scored))
        scored += sum(_in_context(lm, count_tokens(lm, contexts + [x for _, x in recorded.scored])))
        prompt_tokens += times * sum(_in_context(lm, count_tokens(lm, [c for c, _ in recorded.generated])))
        steps += times * -(-sum(p.max_new_tokens for _, p in recorded.generated) // rows)
        some_scored += recorded.scored[:2]
        some_prompts += [c for c, _ in recorded.generated[:1]]
    try:
        per_token, per_step = time_model(lm, some_scored, some_prompts, rows)
    except UserError as exc:  # the task that asks for this request will say so in its turn
        return f"no estimate of the time: timing the model failed ({exc})"
    total = (scored + prompt_tokens) * per_token + steps * per_step
    return (
        f"estimate for {len(runs)} runs: about {duration(total)} ({scored + prompt_tokens:,} tokens to "
        f"score at {1 / per_token:,.0f}/s, up to {steps:,} decode steps of {rows} rows at "
        f"{per_step * 1000:.1f} ms; timed on this model just now)"
    )


def count_tokens(lm: LM, texts: Sequence[str]) -> list[int]:
    """Tokens per text by the LM's tokenizer; LMs without one: about four characters a token."""
    if isinstance(lm, TokenLM):
        return lm.count_tokens(texts)
    return [len(t) // 4 + 1 for t in texts]


def _in_context(lm: LM, counts: list[int]) -> list[int]:
    """Token counts cut to the model's context, as scoring and prompts are (a 64-shot prompt keeps its end)."""
    limit = getattr(lm, "max_len", None)
    return counts if limit is None else [min(n, limit) for n in counts]


def time_model(
    lm: LM, scored: Sequence[tuple[str, str]], prompts: Sequence[str], rows: int, steps: int = 32
) -> tuple[float, float]:
    """(seconds per scored token, seconds per decode step of a `rows`-row batch), timed on some of the
    runs' own requests after a warm-up call (the first call pays one-off costs: allocations, kernels)."""
    per_token = 1e-9
    if scored:
        lm.loglikelihood(scored[:1])
        start = time.perf_counter()
        lm.loglikelihood(scored)
        tokens = sum(count_tokens(lm, [c + x for c, x in scored]))
        per_token = max(per_token, (time.perf_counter() - start) / tokens)
    if not prompts:
        return per_token, 0.0
    lm.generate([(prompts[0], SamplingParams(1))])  # warm-up
    # Two batches that differ only in their steps: the difference is the steps alone, without the prefill.
    short = _generate_seconds(lm, prompts, rows, 1)
    return per_token, max(0.0, _generate_seconds(lm, prompts, rows, 1 + steps) - short) / steps


def _generate_seconds(lm: LM, prompts: Sequence[str], rows: int, steps: int) -> float:
    batch = [(p, SamplingParams(steps, ignore_eos=True)) for p in (list(prompts) * rows)[:rows]]
    start = time.perf_counter()
    lm.generate(batch)
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
