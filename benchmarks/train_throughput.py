"""Training throughput: our trainer's step vs HF transformers' LlamaForCausalLM, same shape, same run.

Shape (issue 3): dim 512, 8 layers, 8 heads, vocab 32000, batch 8 x 512 tokens; AdamW with the paper's
settings for both; the same threads; fp32 and bf16 autocast. Prints tokens/s, MFU against the matmul
peak measured here for each precision, ours/HF ratios and issue 18's goals, met or not.

    python benchmarks/train_throughput.py [--steps 6] [--threads 2] [--compile auto|true|false]
                                          [--run-minutes 60]

Ours is what `llamafoundry train` runs without flags for a run of `--run-minutes`: parallel.compile "auto",
which on CPU compiles runs of parallel.COMPILE_AFTER_S (20 minutes) or more, so by default a compiled step
(the compilation is in the warm-up steps, not timed).

The two trainers take turns step by step (see time_steps): this machine's speed drifts by tens of percent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from llamafoundry.allocator import keep_freed_memory
from llamafoundry.config import ModelConfig, flops_per_token
from llamafoundry.model import Transformer
from llamafoundry.train.metrics import measure_matmul_flops
from llamafoundry.train.optim import OptimConfig, build_optimizer, clip_grad_norm
from llamafoundry.train.parallel import Layout, compile_enabled, training_loss
from llamafoundry.train.recipe import ParallelSection
from llamafoundry.train.trainer import autocast

SHAPE = ModelConfig(dim=512, n_layers=8, n_heads=8, vocab_size=32000, multiple_of=256, max_seq_len=512)
BATCH, SEQ = 8, 512
# Issue 18's goals per precision: (least ours/HF ratio, least MFU).
GOALS = {torch.float32: (1.15, 0.0), torch.bfloat16: (1.5, 0.8)}


def hf_model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=SHAPE.dim,
        intermediate_size=SHAPE.ffn_hidden_dim,
        num_hidden_layers=SHAPE.n_layers,
        num_attention_heads=SHAPE.n_heads,
        num_key_value_heads=SHAPE.n_heads,
        vocab_size=SHAPE.vocab_size,
        max_position_embeddings=SEQ + 1,
        rms_norm_eps=SHAPE.norm_eps,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).train()


def time_steps(
    runs: list[tuple[torch.nn.Module, Callable]], precision: torch.dtype, steps: int
) -> list[float]:
    """Seconds per optimizer step of each (model, loss) run: the median of `steps`, after two warm-up
    steps (which include compiling). The runs take turns step by step, so a busy spell of the machine
    slows them alike instead of one of them."""
    states = [(model, loss_fn, build_optimizer(model, OptimConfig())) for model, loss_fn in runs]
    batch = torch.randint(0, SHAPE.vocab_size, (BATCH, SEQ + 1))
    times: list[list[float]] = [[] for _ in runs]
    for i in range(steps + 2):
        for (model, loss_fn, optimizer), spent in zip(states, times, strict=True):
            start = time.perf_counter()
            with autocast(torch.device("cpu"), precision):
                loss = loss_fn(model, batch)
            loss.backward()
            clip_grad_norm(model, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:
                spent.append(time.perf_counter() - start)
    return [sorted(t)[len(t) // 2] for t in times]


def hf_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch, labels=batch).loss  # HF shifts the labels itself: L predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--compile",
        default=ParallelSection.compile,
        choices=ParallelSection.choices["compile"],
        help=f"our trainer's parallel.compile (default: {ParallelSection.compile}, as `llamafoundry train`)",
    )
    parser.add_argument(
        "--run-minutes",
        type=float,
        default=60.0,
        help="the eager length of the run whose defaults are measured (parallel.compile auto decides by it)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the model-step commands do (allocator.py); HF's steps run in this process too
    torch.set_num_threads(args.threads)
    fpt = flops_per_token(SHAPE, SEQ)
    tokens = BATCH * SEQ
    compiled = compile_enabled(args.compile, torch.device("cpu"), args.run_minutes * 60)
    print(
        f"shape: dim {SHAPE.dim}, {SHAPE.n_layers} layers, {SHAPE.n_heads} heads, vocab {SHAPE.vocab_size}, "
        f"batch {BATCH} x {SEQ}; {args.threads} threads; {fpt / 1e6:.0f} MFLOP/token; ours "
        f"{'compiled' if compiled else 'eager'} (parallel.compile {args.compile}, a {args.run_minutes:g}-minute run)"
    )
    print(
        f"{'precision':<10} {'peak GFLOP/s':>12} {'HF tok/s':>9} {'HF MFU':>7} {'ours tok/s':>10} {'ours MFU':>8} "
        f"{'ratio':>6}  goal"
    )
    for precision in (torch.float32, torch.bfloat16):
        peak = measure_matmul_flops(precision)
        torch.manual_seed(0)
        ours_loss = training_loss(
            ParallelSection(compile=args.compile),
            Layout(0, 1, 1, None),
            torch.device("cpu"),
            eager_seconds=args.run_minutes * 60,
        )
        hf, ours = time_steps(
            [(hf_model(), hf_loss), (Transformer(SHAPE).train(), ours_loss)], precision, args.steps
        )
        name = str(precision).removeprefix("torch.")
        hf_tps, our_tps = tokens / hf, tokens / ours
        mfu, (least_ratio, least_mfu) = our_tps * fpt / peak, GOALS[precision]
        goal = f">= {least_ratio}x" + (f", >= {least_mfu:.0%} MFU" if least_mfu else "")
        met = hf / ours >= least_ratio and mfu >= least_mfu
        print(
            f"{name:<10} {peak / 1e9:>12.0f} {hf_tps:>9.0f} {hf_tps * fpt / peak:>7.1%} {our_tps:>10.0f} "
            f"{mfu:>8.1%} {hf / ours:>6.2f}x  {goal}: {'met' if met else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
