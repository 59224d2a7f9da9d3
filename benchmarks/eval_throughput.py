"""HellaSwag examples/s: our harness vs lm-evaluation-harness, same model, same data, one run.

One randomly initialised LLaMA-shaped model (Meta's 32,000-token tokenizer) is exported as a Hugging Face
folder. lm-eval scores it with its `hf` model type through a local task config over the original-schema
HellaSwag jsonl (its own prompt code); our harness scores the same folder with our model code (packed
shared contexts, logits only where needed), then with the same scorer driven by lm-eval
(`--model llamafoundry`). Accuracies must agree example by example. Model loading is not timed; reading
and tokenising the data is. Run it on a quiet machine: `uptime` first.

    python benchmarks/eval_throughput.py --limit 300
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAMAFOUNDRY_SHARED_DATA", REPO.parent / "shared" / "data"))
SUBSET = "hellaswag/rowanz_jsonl_subset/hellaswag.jsonl"


def build_model(folder: Path, dim: int, layers: int, heads: int):
    from llamafoundry.checkpoint import export
    from llamafoundry.config import ModelConfig
    from llamafoundry.model import Transformer
    from llamafoundry.tokenizer import Tokenizer

    tokenizer = Tokenizer(SHARED / "models/llama_tokenizer/tokenizer.model")
    cfg = ModelConfig(
        dim=dim, n_layers=layers, n_heads=heads, vocab_size=32000, multiple_of=64, max_seq_len=512
    )
    torch.manual_seed(0)
    export(folder / "hf", Transformer(cfg), tokenizer, format="hf")
    return cfg


def run_lm_eval(model, tasks_dir: Path, limit: int, batch_size: int) -> tuple[float, list[dict]]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks_dir))
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=model,
        tasks=["local_hellaswag"],
        limit=limit,
        task_manager=manager,
        batch_size=batch_size,
        log_samples=True,
    )
    seconds = time.perf_counter() - start
    samples = sorted(out["samples"]["local_hellaswag"], key=lambda s: s["doc_id"])
    return seconds, [{"acc": s["acc"], "acc_norm": s["acc_norm"]} for s in samples]


def run_ours(lm, data_dir: Path, limit: int) -> tuple[float, list[dict]]:
    from llamafoundry.eval.tasks import TASKS
    from llamafoundry.eval.tasks.base import RunConfig

    start = time.perf_counter()
    result = TASKS["hellaswag"].run(lm, data_dir, RunConfig(limit=limit))
    return time.perf_counter() - start, [
        {"acc": e["acc"], "acc_norm": e["acc_norm"]} for e in result.examples
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="HellaSwag examples (<= 1000)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="lm-eval's rows per batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lm_eval.models.huggingface import HFLM

    from llamafoundry.eval.lm import LlamaFoundryLM
    from llamafoundry.eval.lm_eval_adapter import LlamaFoundryHarnessLM, write_task_configs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = build_model(tmp, args.dim, args.layers, args.heads)
        write_task_configs(SHARED, tmp / "tasks")
        (tmp / "data/hellaswag").mkdir(parents=True)  # our task reads the official name for the jsonl
        (tmp / "data/hellaswag/hellaswag_val.jsonl").symlink_to(SHARED / SUBSET)
        print(
            f"model: dim {cfg.dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}, float32, "
            f"{torch.get_num_threads()} threads; HellaSwag: first {args.limit} of {SUBSET}"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f}")

        peer_s, peer = run_lm_eval(
            HFLM(pretrained=str(tmp / "hf"), device="cpu", dtype="float32", batch_size=args.batch_size),
            tmp / "tasks",
            args.limit,
            args.batch_size,
        )
        ours_lm = LlamaFoundryLM.from_path(tmp / "hf")
        ours_s, ours = run_ours(ours_lm, tmp / "data", args.limit)
        via_s, via = run_lm_eval(
            LlamaFoundryHarnessLM(pretrained=str(tmp / "hf")), tmp / "tasks", args.limit, args.batch_size
        )
        print(f"load average after: {os.getloadavg()[0]:.2f}")

    n = len(peer)
    rows = [
        ("lm-eval (hf)", peer_s, peer),
        ("ours (llamafoundry eval)", ours_s, ours),
        ("lm-eval --model llamafoundry", via_s, via),
    ]
    print(
        f"\n{'harness':<30} {'seconds':>8} {'examples/s':>11} {'vs lm-eval':>10} {'acc':>6} {'acc_norm':>8}"
    )
    for name, seconds, scores in rows:
        acc = sum(s["acc"] for s in scores) / n
        acc_norm = sum(s["acc_norm"] for s in scores) / n
        print(
            f"{name:<30} {seconds:>8.2f} {n / seconds:>11.2f} {peer_s / seconds:>9.2f}x {acc:>6.3f} {acc_norm:>8.3f}"
        )
    for name, _, scores in rows[1:]:
        differ = sum(a != b for a, b in zip(scores, peer, strict=True))
        print(f"{name}: {differ} of {n} examples differ from lm-eval in acc or acc_norm")


if __name__ == "__main__":
    main()
