"""The training loop: the paper's recipe (Sec. 2.3) on token shards, resumable, with metrics and a report.

`train(recipe, resume=...)` runs a `Trainer` on one process or under torchrun; train/parallel.py shards
the unchanged model across ranks. The Trainer's parts (`step`, `validate`, `save`, `report`) and hooks
(`on_validate`, `init_state`, `data`) are there for what builds on pretraining: evaluation during
training, finetuning, continued pretraining.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from llamafoundry import fileio
from llamafoundry.checkpoint import save_model
from llamafoundry.config import ModelConfig, flops_per_token, num_params
from llamafoundry.data.loader import TokenLoader
from llamafoundry.data.mixture import load_mixture
from llamafoundry.data.shards import read_manifest
from llamafoundry.errors import Interrupted, UserError
from llamafoundry.footprint import EnergyMeter, energy_wh, footprint
from llamafoundry.tokenizer import Tokenizer, load_tokenizer
from llamafoundry.train import checkpointing, parallel
from llamafoundry.train.benchmarks import CURVE, BenchmarkHook, benchmark_keys
from llamafoundry.train.distributed import Runtime, init_runtime, on_rank0, shutdown
from llamafoundry.train.init import load_init_state
from llamafoundry.train.loss import lm_loss, loss_weights
from llamafoundry.train.metrics import (
    MetricsLogger,
    device_power_w,
    peak_flops,
    perplexity,
    plot_loss_curve,
    read_metrics,
)
from llamafoundry.train.optim import Schedule, build_optimizer, clip_grad_norm
from llamafoundry.train.recipe import RunRecipe
from llamafoundry.train.recipe import validate as validate_recipe
from llamafoundry.train.stopping import StopSignals

# The report's tokens/s and MFU average the last training records: compilation and warm-up are over.
REPORT_LAST_RECORDS = 20

RUN_KIND = "training run"  # what output.dir's marker calls it


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
    """bf16 autocast on `device`, or nothing for fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainResult:
    """How a finished run ended; its files are in `output`."""

    steps: int
    tokens: int
    train_loss: float
    val_loss: float
    elapsed_s: float
    output: Path
    is_main: bool = True  # this process is rank 0, the one that speaks for a multi-rank job


@dataclass
class Progress:
    """Where a run stands; every checkpoint holds it, so a resumed run continues the same count."""

    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0

    def advance(self, seconds: float, tokens: int) -> None:
        self.step, self.tokens, self.elapsed_s = self.step + 1, self.tokens + tokens, self.elapsed_s + seconds


# A hook run at each validation: (trainer, step, the validation record so far) -> metrics to add, or None.
ValidateHook = Callable[["Trainer", int, dict], "dict | None"]


class Loader(Protocol):
    """Batches of one optimizer step, resumable: what `TokenLoader` is for token shards."""

    def next_step(self) -> torch.Tensor:
        """This rank's micro-batches of the next step: [accum, micro, ...] as `train.loss.lm_loss` reads them."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class TrainData(Protocol):
    """Where a run's batches and tokenizer come from: token shards (`ShardData`) unless the Trainer is
    given another (a finetune's instruction examples)."""

    name: str  # what the report calls the data
    tokenizer: Tokenizer  # copied into the run folder and its model folder

    def check(self, model_cfg: ModelConfig) -> None:
        """A UserError when the model cannot read this data (token ids, lengths)."""
        ...

    def loader(self, split: str, micro: int, accum: int, rank: int, world_size: int) -> Loader:
        """The loader of `split` ("train", "val"); a UserError when the split is too small for one step."""
        ...


class ShardData:
    """Pretraining's data: the token shards at `data.tokens`, mixed by `data.mixture`'s weights."""

    def __init__(self, recipe: RunRecipe) -> None:
        if not recipe.data.tokens:
            raise UserError(
                "data.tokens is not set: point it at a folder built by `llamafoundry data tokenize`"
            )
        self.recipe, self.folder = recipe, Path(recipe.data.tokens)
        self.name = str(self.folder)
        self.manifest = read_manifest(self.folder)
        self.tokenizer = load_tokenizer(self.folder / "tokenizer.model")
        mixture = recipe.data.mixture
        self.weights = {k: v.weight for k, v in load_mixture(mixture).items()} if mixture else None

    def check(self, model_cfg: ModelConfig) -> None:
        _check_fits_data(self.recipe, model_cfg, self.manifest)

    def loader(self, split: str, micro: int, accum: int, rank: int, world_size: int) -> TokenLoader:
        return TokenLoader(
            self.folder,
            self.recipe.data.seq_len,
            micro,
            split=split,
            accum=accum,
            rank=rank,
            world_size=world_size,
            seed=self.recipe.train.seed,
            weights=self.weights,
            verify=self.recipe.data.verify_checksums,
        )


class Trainer:
    """One training run of a RunRecipe: the model, optimizer, data and schedule it builds, and the loop.

    `fit()` is the paper's recipe (Sec. 2.3): `step()` until the horizon, `validate()` and `save()` as
    the recipe says, then validate, save, export the model folder and `report()`. Rank 0 writes metrics,
    checkpoints' JSON, the model folder and the report into `output.dir`.

    Hooks, for what builds on pretraining:
    - `on_validate`: callables run at each validation on every rank (the model may be sharded, so their
      forward passes are collective), with the model in eval mode; the metrics they return join the
      validation record in metrics.jsonl and TensorBoard (evaluation during training, Fig. 2). A recipe's
      `[eval] tasks` adds one that scores those benchmarks (train/benchmarks.py).
    - `init_state`: a full state dict (every rank passes it) loaded into the freshly built model, for
      finetuning and continued pretraining; names and shapes are checked. A recipe's `[model] init_from`
      loads one from a model folder (train/init.py). A resumed run continues from its checkpoint
      instead, so an interrupted finetune picks up where it stopped.
    - `data`: where batches and the tokenizer come from (`TrainData`); token shards by default. A
      finetune gives its examples, in batches of tokens and targets with the prompts masked.
    - `adapt`: changes the freshly built model before it is sharded (LoRA adds its adapters; only
      parameters left trainable reach the optimizer); `init_state` then holds the adapted names.

    Without `runtime` the Trainer joins the torchrun job itself; `train()` also leaves it cleanly after.
    """

    def __init__(
        self,
        recipe: RunRecipe,
        *,
        runtime: Runtime | None = None,
        resume: bool = False,
        init_state: dict[str, torch.Tensor] | None = None,
        on_validate: Sequence[ValidateHook] = (),
        data: TrainData | None = None,
        adapt: Callable[[torch.nn.Module], object] | None = None,
    ) -> None:
        validate_recipe(recipe)
        self.recipe, self.rt = recipe, runtime or init_runtime()
        self.on_validate = list(on_validate)
        self.out = Path(recipe.output.dir)
        fileio.check_run_dir(self.out, RUN_KIND, recognise=_is_unmarked_run)
        self.data = data or ShardData(recipe)
        self.model_cfg = recipe.model_config()
        self.data.check(self.model_cfg)
        self.resume_from = _resume_point(self.out, resume, self.model_cfg)
        if init_state is None and self.resume_from is None and "init_from" in recipe.model:
            # Continued pretraining (train/init.py); a resumed run continues from its checkpoint instead.
            init_state = load_init_state(recipe.model["init_from"], self.model_cfg, Path(recipe.data.tokens))
        self.precision = resolve_precision(recipe.train.precision, self.rt.device)
        self.layout = parallel.plan_layout(recipe.parallel, self.model_cfg, self.rt)
        self.micro, self.accum = _batch_layout(recipe, self.layout.dp_size)
        if recipe.eval.tasks:
            # Built now, so a missing task file or a layout that cannot score fails before training.
            hook = BenchmarkHook(recipe.eval, self.data.tokenizer, self.layout)
            self.on_validate.insert(0, hook)
        self.tokens_per_step = recipe.train.batch_tokens
        torch.manual_seed(recipe.train.seed)
        self.model = parallel.build_parallel_model(
            self.model_cfg, recipe.parallel, self.rt, self.precision, self.layout, adapt
        )
        self.optim_cfg = recipe.train.optim_config()
        self.optimizer = build_optimizer(self.model, self.optim_cfg)
        self.loader = self._loader("train")
        self.loss_fn = parallel.training_loss(recipe.parallel, self.layout, self.rt.device)
        # Validation keeps this loss: a training step compiled later (`_compile_if_worth`) would compile
        # its no-grad graph again for the few batches a validation takes.
        self.val_loss_fn = self.loss_fn
        # Whether parallel.compile "auto" waits to know the run's length (one process on CPU).
        self.compile_pending = (
            recipe.parallel.compile == "auto" and self.layout.mesh is None and self.loss_fn is lm_loss
        )
        # The newest checkpoint of this run, as (step, folder), once there is one.
        self.checkpoint: tuple[int, Path] | None = None
        self.progress, self.total_steps = self._starting_point(init_state)
        self.first_step = self.progress.step  # of this process: a resumed run starts where it stopped
        self.schedule = Schedule(self.optim_cfg, self.total_steps)
        # The denominators of MFU and energy.
        self.flops_per_token = flops_per_token(self.model_cfg, recipe.data.seq_len)
        self.peak_flops = peak_flops(self.rt.device, self.precision) * self.rt.world_size
        self.power_w = recipe.footprint.power_w or device_power_w(self.rt.device)
        self.energy_meter = EnergyMeter(self.rt.device.index if self.rt.device.type == "cuda" else None)

    def _starting_point(self, init_state: dict[str, torch.Tensor] | None) -> tuple[Progress, int]:
        """The checkpoint's progress and horizon when resuming; else step 0 (from `init_state` if given)."""
        if self.resume_from is not None:
            state = checkpointing.load_checkpoint(self.resume_from, self.model, self.optimizer)
            self.checkpoint = (state["step"], self.resume_from)
            self.loader.load_state_dict(state["loader"])
            return Progress(state["step"], state["tokens"], state["elapsed_s"]), state["total_steps"]
        if init_state is not None:
            parallel.load_weights(self.model, self.model_cfg, init_state, "init_state")
        return Progress(), self._horizon()

    def _horizon(self) -> int:
        """Optimizer steps in the run: as set, from the token budget, or what fits `max_minutes`."""
        train = self.recipe.train
        if train.steps:
            return train.steps
        if train.tokens:
            return max(1, math.ceil(train.tokens / self.tokens_per_step))
        self._compile_if_worth(train.max_minutes * 60)  # before the calibration times the steps
        return self._calibrate_steps()

    def _compile_if_worth(self, eager_seconds: float) -> None:
        """parallel.compile "auto" on CPU: compile the training step once the run's eager time is known
        to be long enough to repay it (see parallel.COMPILE_AFTER_S)."""
        if not self.compile_pending:
            return
        self.compile_pending = False
        if not parallel.compile_enabled(self.recipe.parallel.compile, self.rt.device, eager_seconds):
            return
        self.loss_fn = torch.compile(lm_loss)
        if self.rt.is_main:
            tqdm.write(
                f"compiling the training step (about {eager_seconds / 60:.0f} min of eager steps to run; "
                "the first compiled step takes a minute or two; parallel.compile false keeps it eager)"
            )

    def _loader(self, split: str) -> Loader:
        accum = self.accum if split == "train" else 1
        return self.data.loader(split, self.micro, accum, self.layout.dp_rank, self.layout.dp_size)

    def fit(self) -> TrainResult:
        """Train to the horizon in output.dir.

        SIGINT (Ctrl-C) or SIGTERM stops the run at the end of the step under way, with a checkpoint
        there, and raises `Interrupted` saying so: `resume` continues exactly (train/stopping.py).
        """
        with StopSignals(self.rt) as stop:
            self._prepare_output()
            logger = MetricsLogger(self.out, self.recipe.output.tensorboard, enabled=self.rt.is_main)
            bar = self._progress_bar()
            self.model.train()
            train_loss = float("nan")
            try:
                if self.recipe.eval.at_start and self.progress.step == 0:
                    logger.log(self.validate())
                while self.progress.step < self.total_steps:
                    record = self.step()
                    train_loss = record["loss"]
                    self._log_step(record, logger, bar)
                    if self._due(self.recipe.eval.every):
                        logger.log(self.validate())
                    if self._due(self.recipe.checkpoint.every):
                        self.save()
                    self._stop_if_asked(stop)
                bar.close()
                val = self.validate()
                logger.log(val)
            finally:
                bar.close()
                logger.close()
            self.save()
            self._stop_if_asked(stop, before="exporting the model")
        self.export()
        p = self.progress
        result = TrainResult(
            p.step, p.tokens, train_loss, val["loss"], p.elapsed_s, self.out, self.rt.is_main
        )
        self.report(result)
        return result

    def step(self) -> dict:
        """One optimizer step on the next global batch (Sec. 2.3: AdamW, cosine schedule, clipping at 1.0);
        its training record."""
        start = time.perf_counter()
        loss = self._loss(self.loader.next_step(), backward=True)
        grad_norm = clip_grad_norm(self.model, self.recipe.train.grad_clip)
        lr = self.schedule.apply(self.optimizer, self.progress.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        train_loss = float(self.rt.mean(loss))
        seconds = time.perf_counter() - start
        p = self.progress
        p.advance(seconds, self.tokens_per_step)
        if not math.isfinite(train_loss):
            raise UserError(
                f"the loss became {train_loss} at step {p.step}; lower train.lr or check the data"
            )
        if self.compile_pending and p.step >= self.first_step + 2:  # the first pays one-off allocations
            self._compile_if_worth(seconds * (self.total_steps - p.step))
        tokens_per_s = self.tokens_per_step / seconds
        return {
            "kind": "train",
            "step": p.step,
            "tokens": p.tokens,
            "loss": train_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.flops_per_token / self.peak_flops,
            "elapsed_s": p.elapsed_s,
            "energy_wh": energy_wh(p.elapsed_s, self.power_w, self.rt.world_size, self.recipe.footprint.pue),
        }

    def validate(self) -> dict:
        """The validation record now: held-out loss and perplexity, plus what the on_validate hooks return
        (`fit` writes it to metrics.jsonl and TensorBoard)."""
        p = self.progress
        loss = self._val_loss()
        record = {"kind": "val", "step": p.step, "tokens": p.tokens, "loss": loss, "ppl": perplexity(loss)}
        with self._evaluating():
            for hook in self.on_validate:
                record |= _hook_metrics(hook, hook(self, p.step, dict(record)), record)
        return record

    def save(self) -> Path:
        """A resumable checkpoint of the run as it stands (collective: every rank calls it); the one
        already there when this step has one (loaded or saved)."""
        if self.checkpoint is not None and self.checkpoint[0] == self.progress.step:
            return self.checkpoint[1]
        state = {
            "step": self.progress.step,
            "total_steps": self.total_steps,
            "elapsed_s": self.progress.elapsed_s,
            "tokens": self.progress.tokens,
            "loader": self.loader.state_dict(),
            "model_config": self.model_cfg.to_dict(),
            "world_size": self.rt.world_size,
            "config": self.recipe.to_dict(),
        }
        folder = checkpointing.save_checkpoint(
            self.out / "checkpoints",
            self.progress.step,
            self.model,
            self.optimizer,
            state,
            self.recipe.checkpoint.keep,
        )
        self.checkpoint = (self.progress.step, folder)
        return folder

    def export(self) -> None:
        """The model folder `output.dir/model` (collective: the model is gathered to rank 0, which writes)."""
        model = parallel.gather_model(self.model, self.model_cfg)
        if model is not None:
            # The run's own model folder: a resumed run that finished already writes it again.
            save_model(self.out / "model", model, self.data.tokenizer, overwrite=True)

    def report(self, result: TrainResult) -> None:
        """The loss-curve PNG and report.md of a finished run (rank 0)."""
        if not self.rt.is_main:
            return
        records = read_metrics(self.out / "metrics.jsonl")
        title = f"{self.recipe.model.get('preset', 'model')} on {Path(self.data.name).name}"
        plot_loss_curve(records, self.out / "loss_curve.png", title=title)
        recent = [r for r in records if r.get("kind") == "train"][-REPORT_LAST_RECORDS:]
        tokens_per_s = sum(r["tokens_per_s"] for r in recent) / max(1, len(recent))
        mfu = sum(r["mfu"] for r in recent) / max(1, len(recent))
        lines = [
            f"# Training report: {self.out}",
            "",
            f"- model: {num_params(self.model_cfg):,} parameters ({self.recipe.model})",
            f"- data: {self.data.name} (seq_len {self.recipe.data.seq_len}); "
            f"tokens seen {result.tokens:,} in {result.steps} steps",
            f"- precision: {_dtype_name(self.precision)}; ranks: {self.rt.world_size}",
            f"- final train loss {result.train_loss:.4f}; validation loss {result.val_loss:.4f} "
            f"(perplexity {perplexity(result.val_loss):.2f})",
            f"- time {result.elapsed_s / 60:.1f} min; {tokens_per_s:,.0f} tokens/s; MFU {mfu:.1%} of the measured peak",
            *_benchmark_lines(records),
            *self._footprint_lines(result),
            "",
            "Files: `model/` (load with `llamafoundry.checkpoint.load_model`), `metrics.jsonl`, `loss_curve.png`, "
            f"{f'`{CURVE}`, ' if (self.out / CURVE).is_file() else ''}`config.toml`, `checkpoints/` (each a "
            "model folder that `llamafoundry eval`, `generate`, `info` and `convert` read).",
        ]
        fileio.write_text(self.out / "report.md", "\n".join(lines) + "\n")

    def _footprint_lines(self, result: TrainResult) -> list[str]:
        """The Sec. 6 formula with its inputs, and NVML's measured energy where the GPUs report it."""
        fp = self.recipe.footprint
        device_hours = result.elapsed_s / 3600 * self.rt.world_size
        f = footprint(device_hours, self.power_w, fp.pue, fp.carbon_intensity)
        lines = [
            f"- footprint (Sec. 6 formula): {device_hours:.3g} device-hours x {self.power_w:.0f} W x PUE "
            f"{fp.pue:g} = {f.energy_mwh:.3g} MWh ({f.energy_mwh * 1e6:.1f} Wh); x {fp.carbon_intensity:g} "
            f"tCO2eq/MWh = {f.tco2eq:.3g} tCO2eq ({f.tco2eq * 1e3:.3g} kgCO2eq)"
        ]
        measured = self.energy_meter.wh()
        if measured is not None:  # this process's time on rank 0's GPU, taken for every rank's
            mwh = measured * self.rt.world_size * fp.pue / 1e6
            lines.append(
                f"- measured by NVML (this run's segment, rank 0's GPU x {self.rt.world_size} ranks, PUE "
                f"{fp.pue:g}): {mwh:.3g} MWh, {mwh * fp.carbon_intensity:.3g} tCO2eq"
            )
        return lines

    def _prepare_output(self) -> None:
        """output.dir with the recipe and tokenizer, without what interrupted saves left; on resume,
        metrics of steps to be run again dropped. (Every rank checked output.dir before the model was built.)"""

        def prepare() -> None:
            fileio.claim_run_dir(self.out, RUN_KIND, recognise=_is_unmarked_run)
            checkpointing.remove_partial(self.out / "checkpoints")
            _truncate_metrics(self.out / "metrics.jsonl", self.progress.step, self.total_steps)
            fileio.write_text(self.out / "config.toml", self.recipe.to_toml())
            self.data.tokenizer.save(self.out / "tokenizer.model")

        on_rank0(
            prepare,
            lambda exc: (
                f"cannot write to output.dir {self.out} ({exc.strerror or exc}): make it writable "
                "or choose another folder"
            ),
        )

    def _progress_bar(self) -> tqdm:
        """The run's one-line summary, then a bar of its steps (rank 0)."""
        if self.rt.is_main:
            print(
                f"training {num_params(self.model_cfg) / 1e6:.1f}M parameters for {self.total_steps} steps of "
                f"{self.tokens_per_step:,} tokens ({self.micro} x {self.recipe.data.seq_len} x {self.accum} "
                f"accum x {self.rt.world_size} ranks), {_dtype_name(self.precision)}, "
                f"warmup {self.schedule.warmup_steps}"
            )
        return tqdm(
            total=self.total_steps,
            initial=self.progress.step,
            desc="training",
            unit="step",
            disable=not self.rt.is_main,
            smoothing=0.1,
        )

    def _log_step(self, record: dict, logger: MetricsLogger, bar: tqdm) -> None:
        """The record to metrics.jsonl every `log_every` steps and at the last; the bar every step."""
        if self.progress.step % self.recipe.train.log_every == 0 or self.progress.step == self.total_steps:
            logger.log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
        bar.update()

    def _due(self, every: int) -> bool:
        """Whether a periodic validation or checkpoint falls on this step (the last step has its own)."""
        step = self.progress.step
        return bool(every) and step % every == 0 and step < self.total_steps

    def _stop_if_asked(self, stop: StopSignals, before: str = "") -> None:
        """At a step boundary: when a signal asked for a stop, save here and raise `Interrupted`."""
        signum = stop.requested()
        if not signum:
            return
        folder = self.save()
        name = signal.Signals(signum).name
        where = f"after step {self.progress.step} of {self.total_steps}"
        raise Interrupted(
            f"stopped by {name} {where}{', before ' + before if before else ''}; checkpoint saved in "
            f"{folder}: continue with --resume",
            signum,
            quiet=not self.rt.is_main,
        )

    def _loss(self, batch: torch.Tensor, backward: bool) -> torch.Tensor:
        """Forward (and backward) over this rank's micro-batches; the mean loss over them."""
        total = torch.zeros((), device=self.rt.device)
        # Training weighs every rank's target tokens alike (its gradients are averaged over ranks);
        # validation averages each rank's own mean.
        over_ranks = (
            (lambda total: self.rt.mean(total.to(self.rt.device))) if backward else (lambda total: total)
        )
        weights = loss_weights(batch, over_ranks).tolist()
        for micro, weight in zip(batch.to(self.rt.device, non_blocking=True), weights, strict=True):
            attention = parallel.attention_backend(self.recipe.parallel.sdpa_backend, self.rt.device)
            with autocast(self.rt.device, self.precision), attention:
                loss = (self.loss_fn if backward else self.val_loss_fn)(self.model, micro)
            if backward:
                (loss * weight).backward()
            total += loss.detach() * weight
        return total

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        self.model.eval()
        try:
            yield
        finally:
            self.model.train()

    @torch.no_grad()
    def _val_loss(self) -> float:
        """Mean loss on the same held-out windows each time (NaN when the validation split is too small)."""
        try:
            loader = self._loader("val")
        except UserError:
            return float("nan")
        with self._evaluating():
            losses = [self._loss(loader.next_step(), backward=False) for _ in range(self.recipe.eval.batches)]
        return float(self.rt.mean(torch.stack(losses).mean()))

    def _calibrate_steps(self) -> int:
        """Steps that fit `max_minutes`: time two forward+backward passes (no update) on a spare loader."""
        probe = self._loader("train")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            self._loss(probe.next_step(), backward=True)
            times.append(time.perf_counter() - start)
        self.optimizer.zero_grad(set_to_none=True)
        step_s = min(times[1:]) * 1.05  # optimizer step and logging add a little
        seconds = torch.tensor(self.recipe.train.max_minutes * 60 / step_s, device=self.rt.device)
        return max(1, int(self.rt.mean(seconds)))


def train(
    recipe: RunRecipe,
    resume: bool = False,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    on_validate: Sequence[ValidateHook] = (),
    device: str | None = None,
) -> TrainResult:
    """Train as `recipe` says, on one process or under torchrun; with `resume`, continue from the newest
    complete checkpoint in output.dir. `init_state` and `on_validate` are the Trainer's hooks; `device`
    as `pick_device` reads it (default: CUDA if available, else the CPU)."""
    runtime = init_runtime(device=device)
    try:
        trainer = Trainer(
            recipe, runtime=runtime, resume=resume, init_state=init_state, on_validate=on_validate
        )
        return trainer.fit()
    finally:
        shutdown(runtime)


def _benchmark_lines(records: list[dict]) -> list[str]:
    """The report's line of benchmark scores at the last validation that had them (`[eval] tasks`)."""
    scored = [r for r in records if r.get("kind") == "val" and benchmark_keys(r)]
    if not scored:
        return []
    last = scored[-1]
    scores = ", ".join(f"{key.split('/', 1)[1]} {last[key]:.4f}" for key in benchmark_keys(last))
    return [f"- benchmarks at step {last['step']} ({last['tokens']:,} tokens; `{CURVE}`): {scores}"]


def _hook_metrics(hook: ValidateHook, metrics: dict | None, record: dict) -> dict:
    """A hook's metrics, which may add to the validation record but not change what the trainer measured."""
    metrics = metrics or {}
    clash = sorted(record.keys() & metrics.keys())
    if clash:
        raise ValueError(
            f"on_validate hook {hook!r} returned {clash}, which the validation record already has"
        )
    return metrics


def _check_fits_data(recipe: RunRecipe, model_cfg: ModelConfig, manifest: dict) -> None:
    """The model reads every token id of the shards, and windows no longer than its context."""
    if model_cfg.vocab_size < manifest["vocab_size"]:
        raise UserError(
            f"model vocab_size {model_cfg.vocab_size} is smaller than the tokenizer's "
            f"{manifest['vocab_size']}; set model.vocab_size = {manifest['vocab_size']}"
        )
    if recipe.data.seq_len > model_cfg.max_seq_len:
        raise UserError(
            f"data.seq_len {recipe.data.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len}"
        )


def _is_unmarked_run(folder: Path) -> bool:
    """A run folder from before output markers, so ours to resume in: it holds a complete checkpoint."""
    return checkpointing.latest_checkpoint(folder / "checkpoints") is not None


def _resume_point(out: Path, resume: bool, model_cfg: ModelConfig) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); a fresh run refuses a folder with checkpoints."""
    existing = checkpointing.latest_checkpoint(out / "checkpoints")
    if existing is not None and not resume:
        raise UserError(
            f"{out} already holds checkpoints; pass --resume to continue that run or set "
            "output.dir to a new folder"
        )
    if existing is not None:
        _check_same_shape(existing, model_cfg)
    return existing if resume else None


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


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _truncate_metrics(path: Path, step: int, last_step: int) -> None:
    """On resume, drop records of steps after the checkpoint: they will be run again. So will the final
    validation, when the run stopped between its last checkpoint and its report."""
    if path.is_file():
        kept = [
            r
            for r in read_metrics(path)
            if r.get("step", 0) <= step and not (r.get("kind") == "val" and r.get("step") == last_step)
        ]
        fileio.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
