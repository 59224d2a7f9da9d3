"""Greedy generation tasks, our harness vs lm-eval's hf model: examples/s of NQ (0-shot) and GSM8k (8-shot).

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

The peer is lm-evaluation-harness's `hf` model (transformers' `generate`, batches of `--batch-size`) on a
Hugging Face export of the same weights, fed the very requests our tasks make (prompt, stop strings,
token budget), so the prompts are equal and the engines are compared; its completions are counted
against ours (greedy both: they differ only where float rounding breaks a near-tie). A completion whose
only difference is a leading space ours has is lm-eval's (`same_completion`): lm-eval decodes the
generated tokens alone, and the Llama tokenizer drops the space SentencePiece marks on the first piece;
such completions are counted apart (with the same token ids, they were 44 of 64 NQ and 5 of 8 GSM8k
completions on this model, every one of the "differences"). Each engine runs
once per round, in turn, best wall time kept; the last lines state the goal (ours at least as fast as
lm-eval on each task; the issue sets no number) as met or NOT met.

    python benchmarks/eval_generation.py --save before.json
    python benchmarks/eval_generation.py --compare before.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from llamafoundry.allocator import keep_freed_memory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAMAFOUNDRY_SHARED_DATA", REPO.parent / "shared" / "data"))
GOAL = 1.0  # our examples/s over lm-eval's on each generation task


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


def run_task(lm, name: str, config) -> tuple[float, float, list[str], list[str]]:
    """(wall seconds, process CPU seconds, predictions, raw completions in request order) of one task run."""
    from llamafoundry.eval.tasks import resolve_tasks

    completions: list[str] = []

    def generate(batch, desc=None):
        completions.extend(type(lm).generate(lm, batch, desc))
        return completions[-len(batch) :]

    runner = copy.copy(lm)  # shares the model and its generators
    runner.generate = generate
    wall, cpu = time.perf_counter(), time.process_time()
    result = resolve_tasks(name)[0].run(runner, SHARED, config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, [e.get("prediction", e.get("completion")) for e in result.examples], completions


def recorded_requests(lm, name: str, config) -> list:
    """The (prompt, SamplingParams) requests task `name` makes, recorded by a dry run (no generation)."""
    from llamafoundry.eval.tasks import resolve_tasks

    requests: list = []

    def record(batch, desc=None):
        requests.extend(batch)
        return [""] * len(batch)

    recorder = copy.copy(lm)
    recorder.generate = record
    resolve_tasks(name)[0].run(recorder, SHARED, config)
    return requests


def sampling(params) -> dict:
    """lm-eval's generation kwargs for our sampling parameters (greedy, or sampled at a temperature)."""
    if params.temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}


def same_completion(ours: str, theirs: str) -> bool:
    """Whether our completion is lm-eval's text: equal, or equal but for the leading space lm-eval's
    decoding drops (it decodes the continuation alone; ours decodes it after the prompt's last tokens,
    so that prompt + completion is the text of the tokens)."""
    return ours == theirs or ours == " " + theirs


def lm_eval_generate(model, requests: list) -> tuple[float, float, list[str]]:
    """(wall seconds, process CPU seconds, completions) of lm-eval's `generate_until` on `requests`."""
    from lm_eval.api.instance import Instance

    instances = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(prompt, {"until": list(p.stop), "max_gen_toks": p.max_new_tokens, **sampling(p)}),
            idx=0,
        )
        for prompt, p in requests
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    texts = model.generate_until(instances, disable_tqdm=True)
    return time.perf_counter() - wall, time.process_time() - cpu, texts


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
    parser.add_argument("--batch-size", type=int, default=64, help="lm-eval's rows per batch")
    parser.add_argument("--rounds", type=int, default=2, help="each engine runs once per round, in turn")
    parser.add_argument(
        "--compile", choices=("on", "off"), help="LlamaFoundryLM's compile option (default: its default)"
    )
    parser.add_argument("--save", type=Path, help="write the completions to this JSON file")
    parser.add_argument("--compare", type=Path, help="count completions that differ from this saved run")
    args = parser.parse_args()
    keep_freed_memory()  # as the model-step commands do (allocator.py)
    torch.set_num_threads(args.threads)

    from lm_eval.models.huggingface import HFLM

    from llamafoundry.checkpoint import export

    lm, cfg = build_lm(512, 8, 8, **({"compile": args.compile == "on"} if args.compile else {}))
    runs = {
        "naturalquestions": RunConfig(limit=args.nq_limit),
        "gsm8k": RunConfig(
            limit=args.gsm8k_limit, samples=args.gsm8k_samples, max_new_tokens=args.gsm8k_tokens
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        export(Path(tmp) / "hf", lm.model, lm.tokenizer, format="hf")
        peer = HFLM(
            pretrained=str(Path(tmp) / "hf"), device="cpu", dtype="float32", batch_size=args.batch_size
        )
    print(
        f"model: dim {cfg.dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}, float32, "
        f"{torch.get_num_threads()} threads, compile {args.compile or 'default'}; lm-eval hf batch "
        f"{args.batch_size}; {args.rounds} rounds, best of each; load average before: {os.getloadavg()[0]:.2f}"
    )
    outputs: dict[str, list[str]] = {}
    best: dict[tuple[str, str], float] = {}
    texts: dict[tuple[str, str], list[str]] = {}
    for name, config in runs.items():
        requests = recorded_requests(lm, name, config)
        engines = {
            "ours": lambda: run_task(lm, name, config),  # noqa: B023 (called within this iteration)
            "lm-eval (hf)": lambda: lm_eval_generate(peer, requests),  # noqa: B023
        }
        for round_ in range(args.rounds):
            for engine in list(engines)[round_ % 2 :] + list(engines)[: round_ % 2]:
                load = os.getloadavg()[0]
                wall, cpu, *got = engines[engine]()
                print(
                    f"round {round_ + 1}: {name:<18} {engine:<14} {wall:8.2f} s wall {cpu:8.2f} s CPU "
                    f"(load before {load:.2f})"
                )
                best[name, engine] = min(best.get((name, engine), float("inf")), wall)
                texts[name, engine] = got
        outputs[name] = texts[name, "ours"][0]
        ours, theirs = texts[name, "ours"][1], texts[name, "lm-eval (hf)"][0]
        greedy = [i for i, (_, p) in enumerate(requests) if p.temperature == 0]
        differ = sum(not same_completion(ours[i], theirs[i]) for i in greedy)
        spaced = sum(ours[i] != theirs[i] for i in greedy) - differ
        print(
            f"{name}: {differ} of {len(greedy)} greedy completions differ between ours and lm-eval's "
            f"({spaced} more only by the leading space lm-eval's decoding drops)"
        )
    print(
        f"\n{'task':<18} {'examples':>8} {'engine':<14} {'wall s':>8} {'examples/s':>11} {'vs lm-eval':>10}"
    )
    met = {}
    for name in runs:
        n = len(outputs[name])
        for engine in ("lm-eval (hf)", "ours"):
            wall = best[name, engine]
            ratio = best[name, "lm-eval (hf)"] / wall
            print(f"{name:<18} {n:>8} {engine:<14} {wall:>8.2f} {n / wall:>11.2f} {ratio:>9.2f}x")
        met[name] = best[name, "lm-eval (hf)"] / best[name, "ours"]
    for name, ratio in met.items():
        print(
            f"goal: {name} ours >= {GOAL:.1f}x lm-eval's examples/s: {ratio:.2f}x: "
            f"{'met' if ratio >= GOAL else 'NOT met'}"
        )
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
