"""Training run recipes: typed sections read from a TOML file, then `--section.key value` overrides.

[model]       preset = "llama-15m", plus any ModelConfig field to change (e.g. vocab_size = 8192);
              init_from = "<model folder>" starts from its weights, in its shape (train/init.py)
[data]        tokens = "<token shard folder>", seq_len, mixture = "<recipe with a [mixture] table>"
[train]       batch_tokens, micro_batch, steps | tokens | max_minutes, lr and the Sec. 2.3 recipe
[eval]        every, at_start, batches; tasks = ["hellaswag", "piqa"] (benchmarks run on the live model at
              every validation, as `llamafoundry eval` scores them), limit, shots, data_dir, seed, batch_size
[checkpoint]  every, keep
[output]      dir, tensorboard
[parallel]    dp_shard, tp, activation_checkpoint, compile (see train/parallel.py)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from llamafoundry.config import ModelConfig, get_preset
from llamafoundry.errors import UserError
from llamafoundry.fileio import read_toml
from llamafoundry.train.optim import OptimConfig


class _Section:
    """A recipe table, checked when it is built: `choices` of its string fields, `_problem` the rest."""

    name: ClassVar[str]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        for key, allowed in self.choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(
                    f"{self.name}.{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}"
                )
        problem = self._problem()
        if problem:
            raise UserError(f"{self.name}.{problem}")

    def _problem(self) -> str | None:
        return None


def _at_least(name: str, value: int, low: int, note: str = "") -> str | None:
    return None if value >= low else f"{name} must be at least {low}{note}, got {value}"


def _within(name: str, value: float, low: float, high: float, interval: str) -> str | None:
    """`value` in the interval written `interval` ("[0, 1)"), whose ends are `low` and `high`."""
    inside = (low < value if interval[0] == "(" else low <= value) and (
        value < high if interval[-1] == ")" else value <= high
    )
    return None if inside else f"{name} must be in {interval}, got {value}"


@dataclass
class DataSection(_Section):
    name: ClassVar[str] = "data"
    tokens: str = ""  # folder written by `llamafoundry data tokenize` (manifest.json + shards)
    seq_len: int = 512
    mixture: str = ""  # a TOML file with a [mixture] table; empty: Table 1 weights (or token shares)
    verify_checksums: bool = True

    def _problem(self) -> str | None:
        return _at_least("seq_len", self.seq_len, 1)


@dataclass
class TrainSection(_Section):
    name: ClassVar[str] = "train"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"precision": ("auto", "bf16", "fp32")}
    batch_tokens: int = 65536  # global batch in tokens (the paper: 4M); reached by accumulation
    micro_batch: int = 8  # sequences per forward/backward on one rank
    steps: int = 0  # how long to train: exactly one of steps, tokens, max_minutes
    tokens: int = 0
    max_minutes: float = 0.0
    lr: float = 3.0e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = -1  # -1: the paper's 2,000, scaled to 5% for short runs
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # inf: no clipping
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0
    log_every: int = 1

    def _problem(self) -> str | None:
        return (
            _at_least("batch_tokens", self.batch_tokens, 1)
            or _at_least("micro_batch", self.micro_batch, 1)
            or _at_least("steps", self.steps, 0, " (0: not set)")
            or _at_least("tokens", self.tokens, 0, " (0: not set)")
            or _within("max_minutes", self.max_minutes, 0, math.inf, "[0, inf)")
            or _within("lr", self.lr, 0, math.inf, "(0, inf)")
            or _within("min_lr_ratio", self.min_lr_ratio, 0, 1, "[0, 1]")
            or self._warmup_problem()
            or _within("weight_decay", self.weight_decay, 0, math.inf, "[0, inf)")
            # Adam's moving averages: a beta of 1 never updates them, above 1 they diverge.
            or _within("beta1", self.beta1, 0, 1, "[0, 1)")
            or _within("beta2", self.beta2, 0, 1, "[0, 1)")
            # A clip of 0 zeroes every update and a negative one reverses it: no clipping is inf.
            or _within("grad_clip", self.grad_clip, 0, math.inf, "(0, inf]")
            or _within("seed", self.seed, -(2**63), 2**64, "[-2**63, 2**64)")  # torch's seeds
            or _at_least("log_every", self.log_every, 1)
        )

    def _warmup_problem(self) -> str | None:
        if self.warmup_steps < -1:
            return f"warmup_steps must be -1 (the paper's, scaled) or at least 0, got {self.warmup_steps}"
        if self.steps and self.warmup_steps > self.steps:
            return f"warmup_steps {self.warmup_steps} exceeds the run's {self.steps} steps"
        return None

    def optim_config(self) -> OptimConfig:
        """The optimiser settings of this section: every OptimConfig field it names, the rest defaults."""
        names = {f.name for f in dataclasses.fields(OptimConfig)} & {f.name for f in dataclasses.fields(self)}
        values = {name: getattr(self, name) for name in names}
        if self.warmup_steps < 0:
            values["warmup_steps"] = None  # OptimConfig's spelling of "the paper's, scaled"
        return OptimConfig(**values)


@dataclass
class EvalSection(_Section):
    """Validation: held-out loss, and the paper's benchmarks (Fig. 2) with `llamafoundry eval`'s options."""

    name: ClassVar[str] = "eval"
    every: int = 100  # steps between validation-loss measurements (0: only at the end)
    at_start: bool = False  # validate before the first step too (a finetune's starting point)
    batches: int = 10  # micro-batches of held-out windows per measurement
    tasks: list[str] = field(default_factory=list)  # benchmark names, groups or patterns (eval --tasks)
    limit: int = 0  # first N examples per task (0: all of them)
    shots: int = -1  # few-shot examples (-1: each task's paper setting)
    data_dir: str = ""  # benchmark files (shared/data layout); empty: the Hugging Face hub
    seed: int = 1234  # few-shot draws and sampling, as `llamafoundry eval --seed`
    batch_size: int = 32  # rows per scoring batch, as `llamafoundry eval --batch-size`

    def _problem(self) -> str | None:
        return (
            _at_least("every", self.every, 0, " (0: only at the end)")
            or _at_least("batches", self.batches, 1)
            or _at_least("limit", self.limit, 0, " (0: all examples)")
            or _at_least("shots", self.shots, -1, " (-1: the paper's)")
            or _at_least("batch_size", self.batch_size, 1)
            or self._tasks_problem()
        )

    def _tasks_problem(self) -> str | None:
        if not self.tasks:
            return None
        from llamafoundry.eval.tasks import (
            resolve_tasks,
        )  # only recipes with benchmarks pay for eval's import

        try:
            resolve_tasks(",".join(self.tasks))
        except UserError as exc:
            return f"tasks: {exc}"
        return None


@dataclass
class CheckpointSection(_Section):
    name: ClassVar[str] = "checkpoint"
    every: int = 500  # steps between checkpoints (0: only at the end)
    keep: int = 2  # newest checkpoints kept (0: all of them)

    def _problem(self) -> str | None:
        return _at_least("every", self.every, 0, " (0: only at the end)") or _at_least(
            "keep", self.keep, 0, " (0: all of them)"
        )


@dataclass
class OutputSection(_Section):
    name: ClassVar[str] = "output"
    dir: str = "runs/default"
    tensorboard: bool = True


@dataclass
class ParallelSection(_Section):
    name: ClassVar[str] = "parallel"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "activation_checkpoint": ("none", "full", "selective"),
        "compile": ("auto", "true", "false"),
        "sdpa_backend": ("auto", "flash", "efficient", "math"),
    }
    dp_shard: int = -1  # FSDP2 data-parallel degree; -1: every rank not used by tp
    tp: int = 1  # tensor (+ sequence) parallel degree
    activation_checkpoint: str = "none"  # none | full | selective
    compile: str = "auto"  # auto (CUDA; CPU runs of 20+ min eager, one process) | true | false
    sdpa_backend: str = "auto"  # auto | flash | efficient | math

    def _problem(self) -> str | None:
        return _at_least("dp_shard", self.dp_shard, -1, " (-1: every rank not used by tp)") or _at_least(
            "tp", self.tp, 1
        )


@dataclass
class FootprintSection(_Section):
    """The inputs of the Sec. 6 formula for the run's report: Wh = device-hours x power x PUE,
    tCO2eq = MWh x carbon intensity. The paper's values by default."""

    name: ClassVar[str] = "footprint"
    power_w: float = 0.0  # per device; 0: the GPU's rated power (hardware.py) or busy CPU cores
    pue: float = 1.1
    carbon_intensity: float = 0.385  # tCO2eq per MWh (the US average)

    def _problem(self) -> str | None:
        if not (math.isfinite(self.power_w) and self.power_w >= 0):
            return f"power_w must be 0 (the device's own) or more watts, got {self.power_w}"
        if not (math.isfinite(self.pue) and self.pue >= 1):
            return f"pue must be 1 or more, got {self.pue}"
        if not (math.isfinite(self.carbon_intensity) and self.carbon_intensity >= 0):
            return f"carbon_intensity must be 0 or more tCO2eq per MWh, got {self.carbon_intensity}"
        return None


@dataclass
class RunRecipe:
    model: dict = field(default_factory=lambda: {"preset": "llama-15m"})
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    output: OutputSection = field(default_factory=OutputSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    footprint: FootprintSection = field(default_factory=FootprintSection)

    def model_config(self) -> ModelConfig:
        if "init_from" in self.model:
            from llamafoundry.train.init import resolve_config  # reads a model folder: only such recipes

            return resolve_config(self.model)
        values = dict(self.model)
        base = get_preset(values.pop("preset")) if "preset" in values else ModelConfig()
        return base.replace(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The recipe as TOML that load_run_recipe reads back to an equal RunRecipe."""
        lines = []
        for section, table in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None]
            lines.append("")
        return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, dict):  # an inline table: a model's rope_scaling
        return "{" + ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


_MODEL_KEYS = {"preset": str, "init_from": str} | typing.get_type_hints(ModelConfig)


def load_run_recipe(
    path: str | os.PathLike | None, overrides: list[str] | None = None, *, kind: type[RunRecipe] = RunRecipe
) -> RunRecipe:
    """A RunRecipe (or a `kind` of one: a finetune's) from a TOML file (None: defaults) with
    `--section.key value` overrides applied."""
    values: dict = {}
    if path is not None:
        values = read_toml(path, "config file")
    for key, raw in _pairs(overrides or []):
        section, _, name = key.partition(".")
        values.setdefault(section, {})[name] = _Raw(raw)
    return _build(values, str(path or "command line"), kind)


@dataclass(frozen=True)
class _Raw:
    """A command-line value, typed once we know which field it sets."""

    text: str


def _pairs(args: list[str]) -> list[tuple[str, str]]:
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise UserError(f"unexpected argument {arg!r}; overrides look like --train.lr 3e-4")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(args):
            key, value = arg[2:], args[i + 1]
            i += 2
        else:
            raise UserError(f"override {arg} has no value")
        pairs.append((key, value))
    return pairs


def _build(values: dict, where: str, kind: type[RunRecipe]) -> RunRecipe:
    sections = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - sections)
    if unknown:
        raise UserError(f"{where}: unknown section(s) {unknown}; known: {sorted(sections)}")
    config = kind()
    for section, table in values.items():
        if not isinstance(table, dict):
            raise UserError(f"{where}: [{section}] must be a table")
        if section == "model":
            # The default preset fills in a bare table; a model folder to start from brings its own shape.
            model = dict(config.model) if not table.keys() & {"preset", "init_from"} else {}
            for key, value in table.items():
                if key not in _MODEL_KEYS:
                    raise UserError(f"{where}: unknown key model.{key}; known: {sorted(_MODEL_KEYS)}")
                model[key] = _typed(value, _MODEL_KEYS[key], f"model.{key}", where)
            config.model = model
            config.model_config()  # validates the shape now, not mid-run
            continue
        target = getattr(config, section)
        hints = typing.get_type_hints(type(target))
        fields = {f.name for f in dataclasses.fields(target)}
        for key in table:
            if key not in fields:
                raise UserError(f"{where}: unknown key {section}.{key}; known: {sorted(fields)}")
        # Built whole, so the section checks its values together (warmup within steps).
        typed = {key: _typed(value, hints[key], f"{section}.{key}", where) for key, value in table.items()}
        setattr(config, section, dataclasses.replace(target, **typed))
    return config


def _typed(value: object, hint: object, key: str, where: str) -> object:
    """`value` checked (TOML) or parsed (command line) against the field's type."""
    if typing.get_origin(hint) is list:
        return _typed_list(value, typing.get_args(hint)[0], key, where)
    args = typing.get_args(hint) if _is_union(hint) else (hint,)
    kinds = [t for t in args if t is not type(None)]
    if isinstance(value, _Raw):
        if value.text.lower() == "none" and type(None) in args:
            return None
        for kind in kinds:
            parsed = _parse(value.text, kind)
            if parsed is not None:
                return parsed
    else:
        for kind in kinds:
            if dataclasses.is_dataclass(kind) and isinstance(value, dict):
                return value  # a table for a typed part of the model (rope_scaling), which checks its keys
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                return value
    names = " or ".join(k.__name__ for k in kinds)
    shown = value.text if isinstance(value, _Raw) else repr(value)
    raise UserError(f"{where}: {key} must be {names}, got {shown}")


def _typed_list(value: object, item: type, key: str, where: str) -> list:
    """A TOML array, or a comma-separated command-line value (`--eval.tasks hellaswag,piqa`)."""
    if isinstance(value, _Raw):
        value = [_Raw(part.strip()) for part in value.text.split(",") if part.strip()]
    if not isinstance(value, list):
        raise UserError(f"{where}: {key} must be a list of {item.__name__}, got {value!r}")
    return [_typed(v, item, key, where) for v in value]


def _parse(text: str, kind: type) -> object:
    if kind is bool:
        return {"true": True, "false": False}.get(text.lower())
    try:
        return kind(text)
    except ValueError:
        return None


def _is_union(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def validate(cfg: RunRecipe) -> None:
    """The whole recipe, ready to train: every section (again: code may have changed a field since it
    was built), then what needs more than one of them; a UserError names the fix."""
    for section in (cfg.data, cfg.train, cfg.eval, cfg.checkpoint, cfg.output, cfg.parallel):
        section.check()
    cfg.model_config()
    durations = [name for name in ("steps", "tokens", "max_minutes") if getattr(cfg.train, name)]
    if len(durations) != 1:
        raise UserError(
            "set exactly one of train.steps, train.tokens, train.max_minutes "
            f"(set: {', '.join(durations) or 'none'})"
        )
