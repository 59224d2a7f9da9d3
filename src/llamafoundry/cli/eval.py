"""`llamafoundry eval MODEL --tasks ...`: the paper's benchmarks with its protocols (Sec. 3), any model.
`llamafoundry eval MODEL --paper` runs every task of Tables 3-9 with the paper's settings, resumably.

Flags that lm-evaluation-harness users know work here too: --tasks (names, groups, patterns),
--limit (a count or a fraction), --num_fewshot, --batch_size, --output_path, --device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llamafoundry.cli.options import (
    MODEL_HELP,
    add_load_options,
    add_output,
    check_at_least,
    check_positive,
    quant_config,
    resolve_device,
)
from llamafoundry.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on the paper's benchmarks (Tables 3-9)")
    p.add_argument(
        "model",
        help=f"{MODEL_HELP}, or with --model-type hf any transformers causal LM name or folder",
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated tasks, groups (commonsense, closed_book_qa, race, math_reasoning, code, "
        "paper) or patterns (arc_*); `--tasks list` prints them",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="every task of Tables 3-9 with the paper's shots, k and metrics (full sets unless --limit); "
        "the --output folder keeps each finished task, and a rerun with it continues where a run stopped",
    )
    p.add_argument(
        "--data-dir",
        "--data_dir",
        type=Path,
        default=None,
        help="folder with the benchmark files (shared/data layout); default: the Hugging Face hub",
    )
    p.add_argument(
        "--shots",
        "--num_fewshot",
        default=None,
        help="few-shot examples, one count or a list (NQ/TriviaQA: 0,1,5,64); default: the paper's",
    )
    p.add_argument(
        "--limit", type=float, default=None, help="first N examples per task, or a fraction if < 1"
    )
    p.add_argument("--seed", type=int, default=1234, help="few-shot draws and sampling (default 1234)")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples per problem for maj1@k (GSM8k, MATH) and pass@k (HumanEval, MBPP); "
        "default: the paper's k; 0 skips maj1@k",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation length (default per task)")
    p.add_argument(
        "--toxicity-scorer",
        default="profanity",
        help="RealToxicityPrompts' scorer: profanity (offline, alt-profanity-check), hf:FOLDER (a "
        "sequence-classification folder) or perspective (the paper's; key in PERSPECTIVE_API_KEY)",
    )
    p.add_argument(
        "--judge",
        default=None,
        help="TruthfulQA's truthfulness judge: hf:FOLDER (a sequence-classification folder) or "
        "openai:URL[#MODEL] (an OpenAI-compatible completions endpoint, key in JUDGE_API_KEY)",
    )
    p.add_argument(
        "--info-judge", default=None, help="TruthfulQA's informativeness judge (default: the --judge spec)"
    )
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="HumanEval/MBPP: run generated code even where the kernel refuses the sandbox's namespaces "
        "(only the audit hook and limits then stand in its way); results.json records the layers",
    )
    p.add_argument(
        "--model-type",
        choices=("llamafoundry", "hf"),
        default="llamafoundry",
        help="llamafoundry: our model code (fast packed scoring); hf: transformers AutoModelForCausalLM",
    )
    add_load_options(p)
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per scoring batch (ours)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the decode step of every generation task (ours; default: only runs long "
        "enough to pay for a compilation, such as sampled maj1@k and pass@k)",
    )
    p.add_argument(
        "--batch-size", "--batch_size", type=int, default=32, help="rows per batch (hf) / generation"
    )
    add_output(
        p,
        "folder for results.json (every example) and results.md (default eval_results)",
        default=Path("eval_results"),
    )
    # lm-evaluation-harness's spelling, kept for its users.
    p.add_argument("--output_path", dest="output", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_eval, keeps_freed_memory=True)


def cmd_eval(args: argparse.Namespace) -> None:
    from llamafoundry import fileio
    from llamafoundry.eval import report
    from llamafoundry.eval.evaluator import evaluate
    from llamafoundry.eval.tasks import TASKS, resolve_tasks
    from llamafoundry.eval.tasks.base import RunConfig

    if args.paper:
        _check_paper_flags(args)
    elif args.tasks is None:
        raise UserError("pass --tasks (e.g. --tasks commonsense), or --paper for every task of Tables 3-9")
    if args.tasks == "list":
        for name, task in TASKS.items():
            summary = " ".join((task.__doc__ or "").split())[:80]
            print(f"{name:<15} {task.paper_metric:<11} {task.default_shots}-shot  {summary}")
        return
    tasks = [] if args.paper else resolve_tasks(args.tasks)
    shots = _parse_shots(args.shots)
    check_positive(args, "limit")
    check_at_least(args, 1, "batch_tokens", "batch_size", "max_new_tokens")
    if args.samples is not None and args.samples < 0:
        raise UserError(f"--samples must be 0 or more, got {args.samples}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    config = RunConfig(
        limit=limit,
        seed=args.seed,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        unsafe_no_sandbox=args.unsafe_no_sandbox,
        toxicity_scorer=args.toxicity_scorer,
        judge=args.judge,
        info_judge=args.info_judge,
    )
    meta = {
        "model": args.model,
        "model_type": args.model_type,
        "data_dir": str(args.data_dir or "hub"),
        "limit": limit,
        "seed": args.seed,
    }
    if args.paper:
        results = _run_paper(args, config, meta)
    else:
        fileio.check_output(args.output, overwrite=args.overwrite)  # now, not after the evaluation
        lm = _load(args)
        results = evaluate(lm, tasks, args.data_dir, config, shots)
        with fileio.atomic_dir(args.output, kind="eval results", overwrite=args.overwrite) as folder:
            report.write_json(folder / "results.json", results, meta)
            report.write_markdown(folder / "results.md", results, args.model)
    print(report.markdown(results, args.model), end="")
    print(f"wrote {args.output / 'results.json'} and {args.output / 'results.md'}")
    failed = [r for r in results if r.error]
    if failed:
        raise UserError(
            f"{len(failed)} of {len(results)} task runs failed (the others' results are written): "
            + "; ".join(f"{r.task}: {r.error}" for r in failed)
        )


def _check_paper_flags(args: argparse.Namespace) -> None:
    for flag, given in (("--tasks", args.tasks), ("--shots", args.shots), ("--overwrite", args.overwrite)):
        if given:
            raise UserError(
                f"--paper runs the paper's tasks and shots, and resumes in its --output folder; drop {flag}"
            )


def _run_paper(args: argparse.Namespace, config, meta: dict) -> list:
    """`--paper`: the resumable run of Tables 3-9 in the --output folder (see eval/paper.py)."""
    from llamafoundry import fileio
    from llamafoundry.eval.paper import PAPER_RUN, run_paper

    fileio.check_run_dir(args.output, PAPER_RUN)  # now, not after loading the model
    changed = [
        flag
        for flag, value in (
            ("--limit", args.limit),
            ("--samples", args.samples),
            ("--max-new-tokens", args.max_new_tokens),
        )
        if value is not None
    ]
    if changed:
        print(
            f"note: {', '.join(changed)} given: not the paper's exact settings (settings.json and "
            "results.json record them)",
            file=sys.stderr,
        )
    settings = meta | {
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "quantize": getattr(args, "quantize", None),
    }
    return run_paper(_load(args), args.data_dir, config, args.output, settings)


def _parse_shots(value: str | None) -> list[int | None]:
    if value is None:
        return [None]
    try:
        shots = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--shots takes counts like 0 or 0,1,5,64, got {value!r}") from None
    if not shots or any(s < 0 for s in shots):
        raise UserError(f"--shots takes counts of 0 or more, got {value!r}")
    return list(shots)


def _load(args: argparse.Namespace):
    device = resolve_device(args.device)
    if args.model_type == "hf":
        from llamafoundry.eval.hf_lm import HFCausalLM

        if args.tokenizer is not None or args.quantize is not None or args.compile:
            raise UserError(
                "--tokenizer, --quantize and --compile apply to our model code; drop them with --model-type hf"
            )
        return HFCausalLM(args.model, device=device, dtype=args.dtype, batch_size=args.batch_size)
    from llamafoundry.eval.lm import LlamaFoundryLM

    return LlamaFoundryLM.from_path(
        args.model,
        device=device,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        quantize=quant_config(args),
        batch_tokens=args.batch_tokens,
        compile=True if args.compile else None,  # None: compile where it pays (see LlamaFoundryLM)
        max_batch=args.batch_size,
    )
