"""parallel.compile "auto": CUDA always compiles; on CPU a run compiles its step once its eager time is
known to repay the compilation (parallel.COMPILE_AFTER_S), and a compiled run trains as the eager one."""

import json

import pytest
import torch

from llamafoundry.train import Trainer, load_run_recipe, parallel
from llamafoundry.train.loss import lm_loss
from tests.helpers import tiny_train_args

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def recipe(tokens, out, **settings):
    return load_run_recipe(None, tiny_train_args(tokens, out, **settings)[1:])


def test_auto_compiles_on_cuda_and_long_cpu_runs_and_the_flags_force_it():
    long, short = parallel.COMPILE_AFTER_S, parallel.COMPILE_AFTER_S - 1
    assert parallel.compile_enabled("auto", CUDA)
    assert parallel.compile_enabled("auto", CPU, long)
    assert not parallel.compile_enabled("auto", CPU, short)
    assert not parallel.compile_enabled("auto", CPU)  # the run's length not known yet
    assert parallel.compile_enabled("true", CPU, 0.0) and parallel.compile_enabled("true", CPU)
    assert not parallel.compile_enabled("false", CUDA) and not parallel.compile_enabled("false", CPU, long)


def test_a_short_cpu_run_stays_eager(shakespeare_tokens, tmp_path):
    trainer = Trainer(recipe(shakespeare_tokens, tmp_path / "run", train__steps=4))
    trainer.fit()
    assert trainer.loss_fn is lm_loss and not trainer.compile_pending  # decided, and eager


def test_a_time_boxed_run_decides_before_its_calibration(shakespeare_tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "COMPILE_AFTER_S", 120.0)
    short = Trainer(recipe(shakespeare_tokens, tmp_path / "short", train__max_minutes=1.0))
    assert short.loss_fn is lm_loss and not short.compile_pending
    # A 2-minute budget compiles first, so that the calibration times the steps the run will take.
    long = Trainer(recipe(shakespeare_tokens, tmp_path / "long", train__max_minutes=2.0))
    assert long.loss_fn is not lm_loss and not long.compile_pending
    assert long.total_steps > 1


def test_a_long_cpu_run_compiles_and_trains_as_the_eager_one(shakespeare_tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "COMPILE_AFTER_S", 0.0)  # any run is long enough
    steps = {"train__steps": 6, "eval__every": 3}
    compiled = Trainer(recipe(shakespeare_tokens, tmp_path / "auto", **steps))
    compiled.fit()
    assert compiled.loss_fn is not lm_loss  # compiled after its second step, once its length was known
    assert compiled.val_loss_fn is lm_loss  # validation stays eager: no second (no-grad) compilation
    eager = Trainer(recipe(shakespeare_tokens, tmp_path / "eager", parallel__compile="false", **steps))
    eager.fit()
    assert eager.loss_fn is lm_loss

    def losses(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [(r["kind"], r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    got, want = losses(tmp_path / "auto"), losses(tmp_path / "eager")
    assert [(kind, step) for kind, step, _ in got] == [(kind, step) for kind, step, _ in want]
    assert [loss for *_, loss in got] == pytest.approx([loss for *_, loss in want], rel=1e-4)
