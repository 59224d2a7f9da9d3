"""The main job: the whole paper in miniature on any machine with Python, no network, about ten minutes.

1. corpus     configs/data/quickstart.toml: the standard library's source (GitHub-style filters) and
              Python's own documentation, through the same pipeline stages a real run uses
2. tokenizer  SentencePiece BPE with the paper's options, trained on that corpus
3. tokens     the corpus tokenized into shards, with a held-out validation split
4. training   configs/tiny-cpu.toml: the LLaMA size that the budget buys the lowest loss, with the
              paper's recipe, time-boxed
5. samples, validation perplexity against the corpus's unigram baseline, and a report folder

The size follows the paper's thesis (Sec. 1): the best model for a budget is the one the loss law
says ends lowest, not a fixed size. A few real training steps per candidate size measure this
machine's tokens/s (cached in the run folder per machine and recipe); the budget left after them gives
each candidate its token count D, and the fit that `scaling thesis` made on this corpus
(docs/thesis/fit.json, L = E + A/N^alpha + B/D^beta, N the parameters that multiply) predicts its
validation loss; the least wins. Measured on 2 idle cores by the thesis issue, four minutes each with
an 8,192-piece vocabulary: llama-15m 5.69 nats/token, a 2.9M model 4.23. The fit is in nats per token of
its 1,024-piece tokenizer at 128 tokens of context, so the quickstart trains in those units; `--model
PRESET` picks the size instead (any vocabulary).

Every stage reuses what an earlier run built; an interrupted training run resumes from its checkpoint,
with the size chosen when it started.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["def fibonacci(n):", "class Stack:\n    def", "The os module", "import json\n\n\ndef load("]
FIT = REPO / "docs" / "thesis" / "fit.json"
# Candidate sizes, DIMxLAYERS with heads of 64 dimensions (sweep.Size): 0.1M to 3.5M parameters that
# multiply. At the ~10-50K tokens/s of 2 cores the fit's optimum for a few minutes to an hour is inside.
SIZES = ("48x2", "64x2", "96x3", "128x2", "128x4", "192x4", "256x4")
VAL_FRACTION = 0.02
CALIBRATION_WARMUP = 1  # steps before the clock starts: first-touch allocation, oneDNN's kernel choice
# Timed per candidate, at least one step. With three steps the minimum, a shared machine (load 12 on 2
# cores, seconds per step) spent 257 s of a 600 s budget calibrating seven candidates.
CALIBRATION_SECONDS = 2.0


@dataclass(frozen=True)
class QuickstartOptions:
    out: Path = Path("runs/quickstart")
    minutes: float = 10.0
    vocab_size: int = 1024  # the shipped fit's (its "units"): the choice predicts losses in them
    data_recipe: Path = REPO / "configs" / "data" / "quickstart.toml"
    train_config: Path = REPO / "configs" / "tiny-cpu.toml"
    overrides: tuple[str, ...] = ()
    model: str | None = None  # a preset that overrides the choice
    sizes: tuple[str, ...] = SIZES
    fit: Path = FIT

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:  # found now, not after minutes of building the corpus
            raise UserError(f"invalid quickstart options: {problem}")

    def _problem(self) -> str | None:
        from llamafoundry.tokenizer import MIN_VOCAB_SIZE

        if not (math.isfinite(self.minutes) and self.minutes > 0):
            return f"minutes must be a finite number > 0, got {self.minutes}"
        if self.vocab_size < MIN_VOCAB_SIZE:
            return f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {self.vocab_size}"
        return self._model_problem()

    def _model_problem(self) -> str | None:
        from llamafoundry.config import PRESETS
        from llamafoundry.train.sweep import Size

        if self.model is not None and self.model not in PRESETS:
            return f"unknown --model {self.model!r}; known presets: {', '.join(PRESETS)}"
        if self.model is None and not self.sizes:
            return "no candidate sizes to choose from"
        for size in self.sizes:
            Size.parse(size)
        return None


def run_quickstart(opts: QuickstartOptions) -> Path:
    """Run every stage (reusing finished ones) in `opts.out`, a run folder; return the report's path."""
    for path in (opts.data_recipe, opts.train_config):
        if not path.is_file():
            raise UserError(
                f"{path} not found: run the quickstart from a checkout of the project, or pass "
                "--data-recipe/--config"
            )
    law = check_fit(opts)
    fileio.claim_run_dir(opts.out, "quickstart", recognise=_is_unmarked_quickstart)
    corpus = build_corpus(opts)
    tokenizer = build_tokenizer(opts, corpus)
    tokens = build_tokens(opts, corpus, tokenizer)
    train_dir, choice = train_model(opts, tokens, law)
    return write_report(opts, corpus, tokens, train_dir, choice)


def check_fit(opts: QuickstartOptions):
    """The fit's law, when it predicts losses in the units this run trains in (else None, with --model);
    found before minutes of building the corpus."""
    from llamafoundry.train.scaling import read_law

    if opts.model is not None and not opts.fit.is_file():
        return None  # the size is given: the fit would only add a predicted loss to the report
    law = read_law(opts.fit)
    units = fileio.read_json(opts.fit).get("units", {})
    if units.get("vocab_size") == opts.vocab_size:
        return law
    if opts.model is not None:
        return None
    raise UserError(
        f"the fit {opts.fit} predicts losses per token of a {units.get('vocab_size', '?')}-piece vocabulary, "
        f"not {opts.vocab_size}: choose the model yourself with --model PRESET, or make a fit for this "
        "vocabulary with `llamafoundry scaling thesis`"
    )


def _is_unmarked_quickstart(folder: Path) -> bool:
    """A quickstart folder from before output markers, so ours to reuse: it holds the tokenizer's stamp."""
    return (folder / "tokenizer.stamp").is_file()


def _stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def build_corpus(opts: QuickstartOptions) -> Path:
    from llamafoundry.data.pipeline import run_recipe
    from llamafoundry.data.recipe import load_recipe

    _stage(
        "1/5 corpus: the standard library's code and Python's documentation (configs/data/quickstart.toml)"
    )
    recipe = load_recipe(opts.data_recipe, str(opts.out / "corpus"))
    report = run_recipe(recipe)
    for name, src in report["sources"].items():
        print(f"  {name}: {src['docs_out']:,} documents, {src['bytes_out'] / 1e6:.1f} MB")
    return recipe.output


def _corpus_fingerprint(corpus: Path) -> str:
    digest = hashlib.sha256()
    for shard in sorted(corpus.rglob("*.jsonl.zst")):
        digest.update(f"{shard.relative_to(corpus)}:{shard.stat().st_size}".encode())
    return digest.hexdigest()


def build_tokenizer(opts: QuickstartOptions, corpus: Path) -> Path:
    from llamafoundry.data.shards import iter_texts
    from llamafoundry.tokenizer import train_tokenizer

    path, stamp = opts.out / "tokenizer.model", opts.out / "tokenizer.stamp"
    fingerprint = f"{_corpus_fingerprint(corpus)}:{opts.vocab_size}"
    _stage(f"2/5 tokenizer: BPE, {opts.vocab_size} pieces, digits split, byte fallback (Sec. 2.1)")
    if path.is_file() and stamp.is_file() and stamp.read_text() == fingerprint:
        print(f"  reusing {path}")
        return path
    with fileio.atomic_path(opts.out / "tokenizer-corpus.txt") as text_file:
        with open(text_file, "w", encoding="utf-8") as f:
            for shard in sorted(corpus.rglob("*.jsonl.zst")):
                for _, text in iter_texts(shard):
                    f.write(text.rstrip("\n") + "\n")
        print("  training SentencePiece (about a minute on 2 cores)...", flush=True)
        train_tokenizer([text_file], path, opts.vocab_size, input_sentence_size=400_000, overwrite=True)
    fileio.write_text(stamp, fingerprint)
    print(f"  wrote {path}")
    return path


def build_tokens(opts: QuickstartOptions, corpus: Path, tokenizer: Path) -> Path:
    from llamafoundry.data.shards import build_shards, group_inputs, read_manifest
    from llamafoundry.tokenizer import load_tokenizer

    folder = opts.out / "tokens"
    _stage("3/5 tokens: documents -> token shards with a held-out validation split")
    sha = hashlib.sha256(load_tokenizer(tokenizer).serialized()).hexdigest()
    if (folder / "manifest.json").is_file() and read_manifest(folder)["tokenizer_sha256"] == sha:
        print(f"  reusing {folder}")
    else:
        build_shards(
            group_inputs([str(corpus)]), tokenizer, folder, val_fraction=VAL_FRACTION, overwrite=True
        )
    manifest = read_manifest(folder)
    for split, sources in manifest["splits"].items():
        counts = ", ".join(f"{src} {sum(s['tokens'] for s in shards):,}" for src, shards in sources.items())
        print(f"  {split}: {counts} tokens")
    return folder


def train_model(opts: QuickstartOptions, tokens: Path, law=None) -> tuple[Path, dict]:
    """Choose the model (or take --model), then train it for the budget; the run folder and the choice."""
    from llamafoundry.train import checkpointing
    from llamafoundry.train.recipe import load_run_recipe
    from llamafoundry.train.trainer import train

    train_dir = opts.out / "train"
    fixed = [
        *("--data.tokens", str(tokens), "--output.dir", str(train_dir)),
        *("--data.mixture", str(opts.data_recipe), "--model.vocab_size", str(opts.vocab_size)),
        *("--train.max_minutes", str(opts.minutes)),
    ]
    _stage(
        f"4/5 model size for {opts.minutes:g} minutes on this machine, then training ({opts.train_config.name})"
    )
    started = (train_dir / "config.toml").is_file() and (opts.out / "choice.json").is_file()
    if started:  # a run keeps the size it started with: resuming needs the same model
        choice = fileio.read_json(opts.out / "choice.json")
        print(f"  reusing the choice made when {train_dir} started: {choice['chosen']}")
    else:
        choice = choose_model(opts, load_run_recipe(opts.train_config, fixed), law)
        fileio.write_json(opts.out / "choice.json", choice)
    cfg = load_run_recipe(opts.train_config, [*fixed, *choice["overrides"], *opts.overrides])
    if (train_dir / "model" / "config.json").is_file():
        _check_same_tokenizer(opts, train_dir)
        print(f"  reusing the trained model in {train_dir / 'model'} (delete {train_dir} to train again)")
        return train_dir, choice
    resume = checkpointing.latest_checkpoint(train_dir / "checkpoints") is not None
    if resume:
        _check_same_tokenizer(opts, train_dir)
        print("  resuming the interrupted run from its last checkpoint")
    train(cfg, resume=resume)
    return train_dir, choice


def _check_same_tokenizer(opts: QuickstartOptions, train_dir: Path) -> None:
    """A run trained on other tokens (an earlier --vocab-size) is not this run's: say so, delete nothing."""
    theirs, ours = train_dir / "tokenizer.model", opts.out / "tokenizer.model"
    if theirs.is_file() and theirs.read_bytes() != ours.read_bytes():
        raise UserError(
            f"{train_dir} was trained with another tokenizer than {ours} (an earlier --vocab-size?): "
            f"delete {train_dir} to train again, or give another --out"
        )


def choose_model(opts: QuickstartOptions, base, law) -> dict:
    """Calibrate each candidate's tokens/s (or only --model's), predict its loss at the budget left, and
    pick the least; the choice as JSON, with the recipe overrides that train it."""
    from llamafoundry.config import matmul_params, num_params

    start = time.monotonic()
    named = {opts.model: {"preset": opts.model}} if opts.model else {s: _shape(s) for s in opts.sizes}
    cache = _read_cache(opts.out / "calibration.json")
    candidates = []
    for name, model in named.items():
        recipe = _sized(base, model)
        cfg = recipe.model_config()
        key = _calibration_key(name, recipe)
        if key not in cache:
            cache[key] = calibrate(recipe, opts.out / "calibration")
            fileio.write_json(opts.out / "calibration.json", cache)
        candidates.append(
            {
                "name": name,
                "shape": f"dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} head(s)",
                "model": model,
            }
            | {"params": num_params(cfg), "matmul_params": matmul_params(cfg), "tokens_per_s": cache[key]}
        )
    spent = time.monotonic() - start
    # Calibration comes out of the budget; a budget too short for it still trains a tenth of it.
    seconds = max(opts.minutes * 60 - spent, opts.minutes * 6)
    rows = predict_losses(law, candidates, seconds)
    chosen = pick(rows) if law is not None else rows[0]
    for row in rows:
        predicted = f", predicted loss {row['predicted_loss']:.3f}" if law is not None else ""
        print(
            f"  {row['name']:>7}: {row['params']:>9,} parameters, {row['tokens_per_s']:>7,.0f} tokens/s "
            f"-> {row['tokens'] / 1e6:.1f}M tokens{predicted}"
        )
    print(f"  {'--model overrides the choice' if opts.model else 'chosen'}: {chosen['name']}")
    return {
        "chosen": chosen["name"],
        "override": opts.model is not None,
        "budget_minutes": opts.minutes,
        "calibration_s": spent,
        "train_minutes": seconds / 60,
        "law": law.to_dict() if law is not None else None,
        "candidates": rows,
        "overrides": _overrides(base, chosen, seconds),
    }


def predict_losses(law, candidates: list[dict], seconds: float) -> list[dict]:
    """Each candidate (its `matmul_params` N and measured `tokens_per_s`) with the tokens D it trains on
    in `seconds` and the loss `law` predicts for (N, D); no prediction without a law."""
    rows = []
    for c in candidates:
        tokens = c["tokens_per_s"] * seconds
        predicted = law.loss(c["matmul_params"], tokens) if law is not None else None
        rows.append(c | {"tokens": tokens, "predicted_loss": predicted})
    return rows


def pick(rows: list[dict]) -> dict:
    """The row of least predicted loss."""
    return min(rows, key=lambda r: r["predicted_loss"])


def _shape(size: str) -> dict:
    from llamafoundry.train.sweep import Size

    parsed = Size.parse(size)
    return {"dim": parsed.dim, "n_layers": parsed.n_layers, "n_heads": parsed.n_heads}


def _sized(base, model: dict):
    """`base` with its model replaced by `model` (a shape or a preset); its other model settings kept."""
    import dataclasses

    kept = {k: v for k, v in base.model.items() if k not in ("dim", "n_layers", "n_heads", "n_kv_heads")}
    return dataclasses.replace(base, model=kept | model)


def _overrides(base, chosen: dict, seconds: float) -> list[str]:
    """Recipe overrides that train `chosen` for `seconds`: the thesis sweep's learning-rate and warmup rule
    for its size (what the fit was measured with), and about 20 validations and 10 checkpoints along it."""
    from llamafoundry.train.scaling import SHORT_RUN_LR_SCALE
    from llamafoundry.train.sweep import kaplan_lr, warmup_steps

    steps = max(1, int(chosen["tokens"] / base.train.batch_tokens))
    n = chosen["matmul_params"]
    model = [x for k, v in chosen["model"].items() for x in (f"--model.{k}", str(v))]
    return [
        *model,
        *("--train.lr", f"{SHORT_RUN_LR_SCALE * kaplan_lr(n):.6g}"),
        *("--train.warmup_steps", str(warmup_steps(n, steps, base.train.batch_tokens))),
        *("--eval.every", str(max(1, steps // 20)), "--checkpoint.every", str(max(1, steps // 10))),
        *("--train.max_minutes", f"{seconds / 60:.6g}"),
    ]


def _calibration_key(name: str, recipe) -> str:
    """A measured speed holds for this machine (CPU, cores, torch threads) and this step's shape."""
    import torch

    t = recipe.train
    machine = f"{platform.node()}/{platform.processor() or platform.machine()}/{os.cpu_count()} cpus"
    return (
        f"{machine}/{torch.get_num_threads()} threads/{name}/vocab {recipe.model_config().vocab_size}/"
        f"seq {recipe.data.seq_len}/batch {t.batch_tokens}/micro {t.micro_batch}/{t.precision}"
    )


def _read_cache(path: Path) -> dict:
    return fileio.read_json(path) if path.is_file() else {}


def calibrate(recipe, scratch: Path) -> float:
    """Tokens/s of real training steps of `recipe` (model, optimizer, data as a run has them): the fastest
    step of those in about CALIBRATION_SECONDS after CALIBRATION_WARMUP. The fastest, as the trainer's own
    calibration takes it: others' load on a shared machine only ever slows a step, so the fastest is the
    least noisy estimate of this machine's speed for the size. `scratch` is the run folder the trainer
    checks; nothing is written there."""
    import dataclasses

    from llamafoundry.train.distributed import init_runtime, shutdown
    from llamafoundry.train.trainer import Trainer

    train = dataclasses.replace(recipe.train, steps=10_000, tokens=0, max_minutes=0.0, warmup_steps=-1)
    output = dataclasses.replace(recipe.output, dir=str(scratch))
    # Eager steps: compiling each candidate would cost a minute. The 10,000 steps are only a horizon for
    # the schedule; a budget of parallel.COMPILE_AFTER_S or more then compiles the chosen model's run,
    # which trains faster than calibrated (its own calibration sets its steps).
    parallel = dataclasses.replace(recipe.parallel, compile="false")
    probe = dataclasses.replace(recipe, train=train, output=output, parallel=parallel)
    runtime = init_runtime()
    try:
        trainer = Trainer(probe, runtime=runtime)
        for _ in range(CALIBRATION_WARMUP):
            trainer.step()
        speeds, start = [], time.perf_counter()
        while not speeds or time.perf_counter() - start < CALIBRATION_SECONDS:
            speeds.append(trainer.step()["tokens_per_s"])
        return max(speeds)
    finally:
        shutdown(runtime)


def samples(model_dir: Path, seed: int = 0) -> list[tuple[str, str]]:
    """Completions of the quickstart prompts (temperature 0.7, top-k 40, seeded)."""
    from llamafoundry.checkpoint import load_model
    from llamafoundry.inference.generate import Generator
    from llamafoundry.inference.sampling import SamplingParams

    model, tokenizer, _ = load_model(model_dir)
    generator = Generator(model, tokenizer)
    params = SamplingParams(max_new_tokens=64, temperature=0.7, top_k=40, seed=seed)
    return [(p, c.text) for p, c in zip(PROMPTS, generator.generate(PROMPTS, params), strict=True)]


def write_report(opts: QuickstartOptions, corpus: Path, tokens: Path, train_dir: Path, choice: dict) -> Path:
    from llamafoundry.data.shards import read_manifest, unigram_cross_entropy
    from llamafoundry.train.metrics import read_metrics

    _stage("5/5 samples and evaluation")
    completions = samples(train_dir / "model")
    for prompt, text in completions:
        print(f"--- {prompt!r}\n{prompt}{text}\n")
    val = [r for r in read_metrics(train_dir / "metrics.jsonl") if r.get("kind") == "val"]
    val_loss = val[-1]["loss"] if val else float("nan")
    trained = val[-1]["tokens"] if val else 0
    baseline = unigram_cross_entropy(tokens)
    val_tokens = sum(
        s["tokens"] for shards in read_manifest(tokens)["splits"]["val"].values() for s in shards
    )
    bits_per_byte = val_loss * val_tokens / val_bytes(corpus) / math.log(2)
    print(
        f"validation loss {val_loss:.3f} nats/token (perplexity {math.exp(val_loss):.1f}), {bits_per_byte:.3f} "
        f"bits/byte; the corpus's unigram baseline is {baseline:.3f} (perplexity {math.exp(baseline):.1f})"
    )
    shutil.copyfile(train_dir / "loss_curve.png", opts.out / "loss_curve.png")
    lines = [
        "# llamafoundry quickstart",
        "",
        f"- corpus: `{corpus}` (report: `{corpus / 'report.md'}`)",
        f"- tokenizer: `{opts.out / 'tokenizer.model'}`; token shards: `{tokens}`",
        f"- training run: `{train_dir}` (report: `{train_dir / 'report.md'}`, metrics: "
        f"`{train_dir / 'metrics.jsonl'}`, config: `{train_dir / 'config.toml'}`)",
        f'- model folder: `{train_dir / "model"}` (`llamafoundry generate {train_dir / "model"} "def "`)',
        f"- validation loss {val_loss:.3f} nats/token (perplexity {math.exp(val_loss):.1f}) after "
        f"{trained:,} tokens, {bits_per_byte:.3f} bits per byte of validation text (nats/token x "
        f"{val_tokens:,} tokens / bytes / ln 2), vs unigram baseline {baseline:.3f} (perplexity "
        f"{math.exp(baseline):.1f})",
        "",
        *choice_lines(choice, val_loss, trained),
        "![loss curve](loss_curve.png)",
        "",
        "## Samples (temperature 0.7, top-k 40)",
        "",
    ]
    for prompt, text in completions:
        lines += ["```", prompt + text, "```", ""]
    report = opts.out / "report.md"
    fileio.write_text(report, "\n".join(lines))
    fileio.write_json(
        opts.out / "summary.json",
        {
            "model": choice["chosen"],
            "val_loss": val_loss,
            "val_bits_per_byte": bits_per_byte,
            "unigram_baseline": baseline,
            "samples": dict(completions),
        },
    )
    print(f"report: {report}")
    return report


def val_bytes(corpus: Path) -> int:
    """UTF-8 bytes of the corpus's validation documents (the split build_tokens holds out)."""
    from llamafoundry.data.shards import is_val, iter_texts

    return sum(
        len(text.encode("utf-8"))
        for shard in sorted(corpus.rglob("*.jsonl.zst"))
        for doc_id, text in iter_texts(shard)
        if is_val(doc_id, VAL_FRACTION)
    )


def choice_lines(choice: dict, val_loss: float, trained: int) -> list[str]:
    """The report's section on the model size: every candidate's measured speed and predicted loss, the
    measured loss of the one trained, and why it was the one."""
    law = choice["law"]
    head = "## The model size"
    if choice["override"]:
        why = f"`--model {choice['chosen']}` overrides the choice; it was not calibrated against other sizes."
    else:
        why = _why(choice, law)
    lines = [
        head,
        "",
        f"Of the {choice['budget_minutes']:g} minutes' budget, {choice['calibration_s']:.0f} s timed a few "
        "real training steps of each candidate on this machine (its fastest step; cached in calibration.json). "
        f"The {choice['train_minutes']:.1f} minutes left at that speed give its tokens D, and the fit "
        "L = E + A/N^alpha + B/D^beta (N the parameters that multiply; nats per token) its predicted "
        "validation loss.",
        "",
        "| candidate | shape | parameters (N) | tokens/s (measured) | tokens at budget | predicted loss |",
        "|---|---|---|---|---|---|",
    ]
    for row in choice["candidates"]:
        mark = "**" if row["name"] == choice["chosen"] else ""
        predicted = f"{row['predicted_loss']:.3f}" if row["predicted_loss"] is not None else "-"
        lines.append(
            f"| {mark}{row['name']}{mark} | {row['shape']} | {row['params']:,} ({row['matmul_params']:,}) | "
            f"{row['tokens_per_s']:,.0f} | {row['tokens'] / 1e6:.2f}M | {predicted} |"
        )
    return [*lines, "", f"{why} Measured: validation loss {val_loss:.3f} after {trained:,} tokens.", ""]


def _why(choice: dict, law: dict) -> str:
    """The sentence that says why the chosen size won, from the fit's two terms at its (N, D)."""
    rows = choice["candidates"]
    chosen = next(r for r in rows if r["name"] == choice["chosen"])
    model_term = law["A"] / chosen["matmul_params"] ** law["alpha"]
    data_term = law["B"] / chosen["tokens"] ** law["beta"]
    return (
        f"**{chosen['name']}** has the least predicted loss ({chosen['predicted_loss']:.3f}): there its "
        f"size costs A/N^alpha = {model_term:.3f} and its tokens B/D^beta = {data_term:.3f}; a larger "
        "candidate trains on fewer tokens in the same minutes and loses more on the second term than it "
        "gains on the first, a smaller one the other way round. Past the sizes and token counts of the "
        "thesis sweep (docs/thesis.md) the fit is extrapolated."
    )
