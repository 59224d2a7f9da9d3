"""Greedy generation tasks through our harness: examples/s of NQ (0-shot) and GSM8k (8-shot), one run.

One randomly initialised LLaMA-shaped model (dim 512, 8 layers, 8 heads, Meta's 32,000-token tokenizer,
512-token context, torch.manual_seed(0)) runs `task.run(lm, data_dir, RunConfig(...))` on the
benchmark files of shared/data, whose layout is already the one the tasks read
(natural_questions/NQ-open.dev.jsonl, gsm8k/test.jsonl; GSM8k draws its shots from the test split when
no train.jsonl is there). Building the model is not timed; reading the data, building prompts and
generating are. GSM8k runs greedy only (`samples=0`; `--gsm8k-samples k` adds maj1@k's k samples per
problem, whose text is not compared: each sample's seed is the harness's choice) with `--gsm8k-tokens`
new tokens, so its 8-shot prompts are cut from the left to fit the 512-token context, as the harness
does. `--save` writes every greedy completion; `--compare` counts those that differ from a saved run
(greedy output is deterministic, so a change of engine should change none). Other processes on the
machine distort the numbers (CPU seconds less than wall time): run it on an idle machine (it prints the
load average).

    python benchmarks/eval_generation.py --save before.json
    python benchmarks/eval_generation.py --compare before.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAMAFOUNDRY_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_lm(dim: int, layers: int, heads: int, **options):
    from llamafoundry.config import ModelConfig
    from llamafoundry.eval.lm import LlamaFoundryLM
    from llamafoundry.model import Transformer
    from llamafoundry.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(SHARED / "models/llama_tokenizer/tokenizer.model")
    cfg = ModelConfig(
        dim=dim, n_layers=layers, n_heads=heads, vocab_size=32000, multiple_of=64, max_seq_len=512
    )
    torch.manual_seed(0)
    return LlamaFoundryLM(Transformer(cfg), tokenizer, **options), cfg


def run_task(lm, name: str, config) -> tuple[float, float, list[str]]:
    """(wall seconds, process CPU seconds, completions) of one task run."""
    from llamafoundry.eval.tasks import resolve_tasks

    wall, cpu = time.perf_counter(), time.process_time()
    result = resolve_tasks(name)[0].run(lm, SHARED, config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, [e.get("prediction", e.get("completion")) for e in result.examples]


def main() -> None:
    from llamafoundry.eval.tasks.base import RunConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nq-limit", type=int, default=256, help="NQ-open dev questions")
    parser.add_argument("--gsm8k-limit", type=int, default=32, help="GSM8k test problems")
    parser.add_argument("--gsm8k-tokens", type=int, default=128, help="new tokens per GSM8k solution")
    parser.add_argument(
        "--gsm8k-samples", type=int, default=0, help="maj1@k samples per GSM8k problem (0: greedy only)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile", choices=("on", "off"), help="LlamaFoundryLM's compile option (default: its default)"
    )
    parser.add_argument("--save", type=Path, help="write the completions to this JSON file")
    parser.add_argument("--compare", type=Path, help="count completions that differ from this saved run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm, cfg = build_lm(512, 8, 8, **({"compile": args.compile == "on"} if args.compile else {}))
    runs = {
        "naturalquestions": RunConfig(limit=args.nq_limit),
        "gsm8k": RunConfig(
            limit=args.gsm8k_limit, samples=args.gsm8k_samples, max_new_tokens=args.gsm8k_tokens
        ),
    }
    print(
        f"model: dim {cfg.dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}, float32, "
        f"{torch.get_num_threads()} threads, compile {args.compile or 'default'}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    outputs: dict[str, list[str]] = {}
    print(f"{'task':<18} {'examples':>8} {'wall s':>8} {'examples/s':>11} {'CPU s':>8}")
    for name, config in runs.items():
        wall, cpu, outputs[name] = run_task(lm, name, config)
        n = len(outputs[name])
        print(f"{name:<18} {n:>8} {wall:>8.2f} {n / wall:>11.2f} {cpu:>8.2f}")
    if args.save:
        args.save.write_text(json.dumps(outputs, indent=1) + "\n")
    if args.compare:
        saved = json.loads(args.compare.read_text())
        for name, texts in outputs.items():
            differ = [i for i, (a, b) in enumerate(zip(texts, saved[name], strict=True)) if a != b]
            print(
                f"{name}: {len(differ)} of {len(texts)} completions differ from {args.compare}: {differ[:10]}"
            )


if __name__ == "__main__":
    main()
