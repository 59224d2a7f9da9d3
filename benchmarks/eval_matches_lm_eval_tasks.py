"""Table 3 against lm-evaluation-harness's own task YAMLs: differing picks per task, same rows, same model.

lm-eval runs its own task YAMLs (HellaSwag with its `process_docs`/`preprocess`, ARC-e/c, PIQA, BoolQ,
WinoGrande, OpenBookQA: their prompts, choices and metrics) over the shared files converted to the hub's row
shapes, scoring through our model type (`--model llamafoundry`); our evaluator runs its own tasks on the
same files. Every rule lm-eval reports (acc, and acc_norm where it has it) is compared pick by pick. The
model is a seeded random LLaMA-shaped model with Meta's 32,000-token tokenizer, or `--model FOLDER`.
Exits 1 if any pick differs.

    python benchmarks/eval_matches_lm_eval_tasks.py --limit 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAMAFOUNDRY_SHARED_DATA", REPO.parent / "shared" / "data"))


def random_model(folder: Path, dim: int, layers: int, heads: int) -> Path:
    from llamafoundry.checkpoint import export
    from llamafoundry.config import ModelConfig
    from llamafoundry.model import Transformer
    from llamafoundry.tokenizer import Tokenizer

    tokenizer = Tokenizer(SHARED / "models/llama_tokenizer/tokenizer.model")
    cfg = ModelConfig(
        dim=dim, n_layers=layers, n_heads=heads, vocab_size=32000, multiple_of=32, max_seq_len=512
    )
    torch.manual_seed(0)
    return export(folder / "native", Transformer(cfg).eval(), tokenizer, format="native")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="rows per task (HellaSwag has 1000)")
    parser.add_argument("--model", type=Path, help="a model folder (default: a random dim-64 model)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from llamafoundry.eval.lm import LlamaFoundryLM
    from llamafoundry.eval.tasks import TASKS
    from llamafoundry.eval.tasks.base import RunConfig

    sys.path.insert(0, str(REPO))  # the lm-eval task configs are test fixtures
    from tests.lm_eval_tasks import lm_eval_picks, write_paper_task_configs

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or random_model(tmp, args.dim, args.layers, args.heads)
        names = write_paper_task_configs(SHARED, tmp / "tasks")
        theirs = lm_eval_picks(model, tmp / "tasks", names, args.limit)
        lm = LlamaFoundryLM.from_path(model)
        print(
            f"model: {args.model or f'random, dim {args.dim}, {args.layers} layers'}; {args.limit} rows per task"
        )
        print("| task | rows | rules | differing picks | differing scores | acc (ours) |")
        print("|---|---|---|---|---|---|")
        total = 0
        for task, picks in theirs.items():
            ours = TASKS[task].run(lm, SHARED, RunConfig(limit=args.limit)).examples
            rules = sorted(picks[0])
            differ = sum(e[f"pred_{m}"] != p[m][0] for e, p in zip(ours, picks, strict=True) for m in rules)
            scores = sum(e[m] != p[m][1] for e, p in zip(ours, picks, strict=True) for m in rules)
            acc = 100 * sum(e["acc"] for e in ours) / len(ours)
            print(f"| {task} | {len(ours)} | {', '.join(rules)} | {differ} | {scores} | {acc:.1f} |")
            total += differ + scores + abs(len(ours) - len(picks))
        return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
