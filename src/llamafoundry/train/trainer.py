"""The training loop: the paper's recipe (Sec. 2.3) on token shards, resumable, with metrics and a report.

`train(config, resume=...)` runs on one process or under torchrun; train/parallel.py shards the
unchanged model across ranks. Rank 0 writes metrics, checkpoints' JSON, the model folder and the
report into `output.dir`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from llamafoundry import fileio
from llamafoundry.checkpoint import save_model
from llamafoundry.config import ModelConfig, flops_per_token, num_params
from llamafoundry.data.loader import TokenLoader
from llamafoundry.data.mixture import load_mixture
from llamafoundry.data.shards import read_manifest
from llamafoundry.errors import UserError
from llamafoundry.footprint import energy_wh
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.train import checkpointing, parallel
from llamafoundry.train.distributed import Runtime, init_runtime, shutdown
from llamafoundry.train.metrics import (
    MetricsLogger,
    device_power_w,
    peak_flops,
    plot_loss_curve,
    read_metrics,
)
from llamafoundry.train.optim import OptimConfig, Schedule, build_optimizer, clip_grad_norm
from llamafoundry.train.recipe import RunRecipe, validate


@dataclass
class TrainResult:
    steps: int
    tokens: int
    train_loss: float
    val_loss: float
    elapsed_s: float
    output: Path


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the device has fast bf16 matmuls (CUDA Ampere+, CPUs with AVX512-BF16/AMX)."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Run:
    """Everything one training run holds, built from a RunRecipe."""

    def __init__(self, cfg: RunRecipe, runtime: Runtime, resume: bool) -> None:
        validate(cfg)
        self.cfg, self.rt = cfg, runtime
        self.out = Path(cfg.output.dir)
        self.ckpt_root = self.out / "checkpoints"
        self.shards = Path(cfg.data.tokens)
        manifest = read_manifest(self.shards)
        self.model_cfg = cfg.model_config()
        if self.model_cfg.vocab_size < manifest["vocab_size"]:
            raise UserError(
                f"model vocab_size {self.model_cfg.vocab_size} is smaller than the tokenizer's "
                f"{manifest['vocab_size']}; set model.vocab_size = {manifest['vocab_size']}"
            )
        if cfg.data.seq_len > self.model_cfg.max_seq_len:
            raise UserError(
                f"data.seq_len {cfg.data.seq_len} exceeds the model's max_seq_len "
                f"{self.model_cfg.max_seq_len}"
            )
        existing = checkpointing.latest_checkpoint(self.ckpt_root)
        self.resume_from = existing if resume else None
        if existing is not None and not resume:
            raise UserError(
                f"{self.out} already holds checkpoints; pass --resume to continue that run or set "
                "output.dir to a new folder"
            )
        if self.resume_from is not None:
            _check_same_shape(self.resume_from, self.model_cfg)
        self.precision = resolve_precision(cfg.train.precision, runtime.device)
        self.layout = parallel.plan_layout(cfg.parallel, self.model_cfg, runtime)
        self.micro, self.accum = _batch_layout(cfg, self.layout.dp_size)
        self.tokens_per_step = cfg.train.batch_tokens
        self.weights = (
            {k: v.weight for k, v in load_mixture(cfg.data.mixture).items()} if cfg.data.mixture else None
        )
        torch.manual_seed(cfg.train.seed)
        self.model = parallel.build_parallel_model(
            self.model_cfg, cfg.parallel, runtime, self.precision, self.layout
        )
        optim = OptimConfig(
            lr=cfg.train.lr,
            min_lr_ratio=cfg.train.min_lr_ratio,
            weight_decay=cfg.train.weight_decay,
            beta1=cfg.train.beta1,
            beta2=cfg.train.beta2,
            grad_clip=cfg.train.grad_clip,
            warmup_steps=None if cfg.train.warmup_steps < 0 else cfg.train.warmup_steps,
        )
        self.optim_cfg = optim
        self.optimizer = build_optimizer(self.model, optim)
        self.loader = self._loader("train")
        self.loss_fn = parallel.training_loss(cfg.parallel, self.layout, runtime.device)

    def _loader(self, split: str) -> TokenLoader:
        return TokenLoader(
            self.shards,
            self.cfg.data.seq_len,
            self.micro,
            split=split,
            accum=self.accum if split == "train" else 1,
            rank=self.layout.dp_rank,
            world_size=self.layout.dp_size,
            seed=self.cfg.train.seed,
            weights=self.weights,
            verify=self.cfg.data.verify_checksums,
        )

    def step_loss(self, batch: torch.Tensor, backward: bool) -> torch.Tensor:
        """Forward (and backward) over this rank's micro-batches; the mean loss over them."""
        total = torch.zeros((), device=self.rt.device)
        for micro in batch.to(self.rt.device, non_blocking=True):
            attention = parallel.attention_backend(self.cfg.parallel.sdpa_backend, self.rt.device)
            with autocast(self.rt.device, self.precision), attention:
                loss = self.loss_fn(self.model, micro)
            if backward:
                (loss / len(batch)).backward()
            total += loss.detach()
        return total / len(batch)

    @torch.no_grad()
    def val_loss(self) -> float:
        """Mean loss on the same held-out windows each time (NaN when the validation split is too small)."""
        try:
            loader = self._loader("val")
        except UserError:
            return float("nan")
        self.model.eval()
        losses = [self.step_loss(loader.next_step(), backward=False) for _ in range(self.cfg.eval.batches)]
        self.model.train()
        return float(self.rt.mean(torch.stack(losses).mean()))

    def calibrate_steps(self) -> int:
        """Steps that fit `max_minutes`: time two forward+backward passes (no update) on a spare loader."""
        probe = self._loader("train")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            self.step_loss(probe.next_step(), backward=True)
            times.append(time.perf_counter() - start)
        self.optimizer.zero_grad(set_to_none=True)
        step_s = min(times[1:]) * 1.05  # optimizer step and logging add a little
        seconds = torch.tensor(self.cfg.train.max_minutes * 60 / step_s, device=self.rt.device)
        return max(1, int(self.rt.mean(seconds)))


def _batch_layout(cfg: RunRecipe, dp_size: int) -> tuple[int, int]:
    """Micro-batch and accumulation steps that make one optimizer step exactly batch_tokens."""
    per_micro = cfg.train.micro_batch * cfg.data.seq_len * dp_size
    if cfg.train.batch_tokens % per_micro:
        raise UserError(
            f"train.batch_tokens {cfg.train.batch_tokens} is not a multiple of micro_batch x seq_len x "
            f"data-parallel ranks = {per_micro}; choose e.g. {max(1, cfg.train.batch_tokens // per_micro) * per_micro}"
        )
    return cfg.train.micro_batch, cfg.train.batch_tokens // per_micro


def _check_same_shape(folder: Path, model_cfg: ModelConfig) -> None:
    saved = checkpointing.read_trainer_state(folder).get("model_config")
    if saved != model_cfg.to_dict():
        changed = sorted(k for k in model_cfg.to_dict() if (saved or {}).get(k) != model_cfg.to_dict()[k])
        raise UserError(
            f"checkpoint {folder} is of a different model shape (differs in {', '.join(changed)}); "
            "resume with the config it was trained with, or set output.dir to a new folder"
        )


def train(cfg: RunRecipe, resume: bool = False) -> TrainResult:
    """Train as `cfg` says; with `resume`, continue from the newest complete checkpoint in output.dir."""
    runtime = init_runtime()
    try:
        return _train(cfg, runtime, resume)
    finally:
        shutdown(runtime)


def _train(cfg: RunRecipe, rt: Runtime, resume: bool) -> TrainResult:
    run = _Run(cfg, rt, resume)
    step, elapsed, tokens = 0, 0.0, 0
    if run.resume_from is not None:
        state = checkpointing.load_checkpoint(run.resume_from, run.model, run.optimizer)
        run.loader.load_state_dict(state["loader"])
        step, elapsed, tokens, total_steps = (
            state["step"],
            state["elapsed_s"],
            state["tokens"],
            state["total_steps"],
        )
    else:
        total_steps = _total_steps(cfg, run)
    schedule = Schedule(run.optim_cfg, total_steps)
    if rt.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(run.out / "metrics.jsonl", step)
        fileio.write_text(run.out / "config.toml", cfg.to_toml())
        shutil.copyfile(run.shards / "tokenizer.model", run.out / "tokenizer.model")
    logger = MetricsLogger(run.out, cfg.output.tensorboard, enabled=rt.is_main)
    fpt = flops_per_token(run.model_cfg, cfg.data.seq_len)
    peak = peak_flops(rt.device, run.precision) * rt.world_size
    power = device_power_w(run.rt.device)
    if rt.is_main:
        print(
            f"training {num_params(run.model_cfg) / 1e6:.1f}M parameters for {total_steps} steps of "
            f"{run.tokens_per_step:,} tokens ({run.micro} x {cfg.data.seq_len} x {run.accum} accum x "
            f"{rt.world_size} ranks), {str(run.precision).removeprefix('torch.')}, warmup {schedule.warmup_steps}"
        )
    run.model.train()
    bar = tqdm(
        total=total_steps, initial=step, desc="training", unit="step", disable=not rt.is_main, smoothing=0.1
    )
    train_loss = val_loss = float("nan")
    try:
        while step < total_steps:
            start = time.perf_counter()
            batch = run.loader.next_step()
            loss = run.step_loss(batch, backward=True)
            grad_norm = clip_grad_norm(run.model, cfg.train.grad_clip)
            lr = schedule.apply(run.optimizer, step)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            train_loss = float(rt.mean(loss))
            seconds = time.perf_counter() - start
            step, elapsed, tokens = step + 1, elapsed + seconds, tokens + run.tokens_per_step
            if not math.isfinite(train_loss):
                raise UserError(
                    f"the loss became {train_loss} at step {step}; lower train.lr or check the data"
                )
            tps = run.tokens_per_step / seconds
            if step % cfg.train.log_every == 0 or step == total_steps:
                logger.log(
                    {
                        "kind": "train",
                        "step": step,
                        "tokens": tokens,
                        "loss": train_loss,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": tps,
                        "mfu": tps * fpt / peak,
                        "elapsed_s": elapsed,
                        "energy_wh": energy_wh(elapsed, power, rt.world_size),
                    }
                )
            bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            bar.update()
            if cfg.eval.every and step % cfg.eval.every == 0 and step < total_steps:
                val_loss = run.val_loss()
                logger.log(
                    {
                        "kind": "val",
                        "step": step,
                        "tokens": tokens,
                        "loss": val_loss,
                        "ppl": math.exp(min(val_loss, 50)),
                    }
                )
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < total_steps:
                _checkpoint(run, step, total_steps, elapsed, tokens)
    except KeyboardInterrupt:
        bar.close()
        if step > 0:
            _checkpoint(run, step, total_steps, elapsed, tokens)
            if rt.is_main:
                print(f"interrupted: saved step {step}; continue with --resume")
        raise
    bar.close()
    val_loss = run.val_loss()
    logger.log(
        {"kind": "val", "step": step, "tokens": tokens, "loss": val_loss, "ppl": math.exp(min(val_loss, 50))}
    )
    logger.close()
    _checkpoint(run, step, total_steps, elapsed, tokens)
    _finish(run, step, tokens, train_loss, val_loss, elapsed)
    return TrainResult(step, tokens, train_loss, val_loss, elapsed, run.out)


def _total_steps(cfg: RunRecipe, run: _Run) -> int:
    if cfg.train.steps:
        return cfg.train.steps
    if cfg.train.tokens:
        return max(1, math.ceil(cfg.train.tokens / run.tokens_per_step))
    return run.calibrate_steps()


def _checkpoint(run: _Run, step: int, total_steps: int, elapsed: float, tokens: int) -> None:
    state = {
        "step": step,
        "total_steps": total_steps,
        "elapsed_s": elapsed,
        "tokens": tokens,
        "loader": run.loader.state_dict(),
        "model_config": run.model_cfg.to_dict(),
        "world_size": run.rt.world_size,
        "config": run.cfg.to_dict(),
    }
    checkpointing.save_checkpoint(
        run.ckpt_root, step, run.model, run.optimizer, state, run.cfg.checkpoint.keep
    )


def _finish(run: _Run, step: int, tokens: int, train_loss: float, val_loss: float, elapsed: float) -> None:
    """The model folder, loss-curve PNG and report (rank 0; the model gathered from every rank)."""
    model = parallel.gather_model(run.model, run.model_cfg)
    if model is None:
        return
    tokenizer = Tokenizer(run.out / "tokenizer.model")
    save_model(run.out / "model", model, tokenizer)
    records = read_metrics(run.out / "metrics.jsonl")
    plot_loss_curve(
        records,
        run.out / "loss_curve.png",
        title=f"{run.cfg.model.get('preset', 'model')} on {run.shards.name}",
    )
    train_records = [r for r in records if r.get("kind") == "train"]
    tps = sum(r["tokens_per_s"] for r in train_records[-20:]) / max(1, len(train_records[-20:]))
    mfu = sum(r["mfu"] for r in train_records[-20:]) / max(1, len(train_records[-20:]))
    report = [
        f"# Training report: {run.out}",
        "",
        f"- model: {num_params(run.model_cfg):,} parameters ({run.cfg.model})",
        f"- data: {run.shards} (seq_len {run.cfg.data.seq_len}); tokens seen {tokens:,} in {step} steps",
        f"- precision: {str(run.precision).removeprefix('torch.')}; ranks: {run.rt.world_size}",
        f"- final train loss {train_loss:.4f}; validation loss {val_loss:.4f} (perplexity {math.exp(val_loss):.2f})",
        f"- time {elapsed / 60:.1f} min; {tps:,.0f} tokens/s; MFU {mfu:.1%} of the measured peak",
        f"- energy (estimate, Sec. 6 formula): {energy_wh(elapsed, device_power_w(run.rt.device), run.rt.world_size):.1f} Wh",
        "",
        "Files: `model/` (load with `llamafoundry.checkpoint.load_model`), `metrics.jsonl`, `loss_curve.png`, "
        "`config.toml`, `checkpoints/`.",
    ]
    fileio.write_text(run.out / "report.md", "\n".join(report) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records of steps after the checkpoint: they will be run again."""
    if path.is_file():
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        fileio.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
