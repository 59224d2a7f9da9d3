"""The main job: the whole paper in miniature on any machine with Python, no network, about ten minutes.

1. corpus     configs/data/quickstart.toml: the standard library's source (GitHub-style filters) and
              Python's own documentation, through the same pipeline stages a real run uses
2. tokenizer  SentencePiece BPE with the paper's options, trained on that corpus
3. tokens     the corpus tokenized into shards, with a held-out validation split
4. training   configs/tiny-cpu.toml: a ~15M-parameter LLaMA with the paper's recipe, time-boxed
5. samples, validation perplexity against the corpus's unigram baseline, and a report folder

Every stage reuses what an earlier run built; an interrupted training run resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from llamafoundry import fileio
from llamafoundry.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["def fibonacci(n):", "class Stack:\n    def", "The os module", "import json\n\n\ndef load("]


@dataclass(frozen=True)
class QuickstartOptions:
    out: Path = Path("runs/quickstart")
    minutes: float = 10.0
    vocab_size: int = 8192
    data_recipe: Path = REPO / "configs" / "data" / "quickstart.toml"
    train_config: Path = REPO / "configs" / "tiny-cpu.toml"
    overrides: tuple[str, ...] = ()

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
        return None


def run_quickstart(opts: QuickstartOptions) -> Path:
    """Run every stage (reusing finished ones) in `opts.out`, a run folder; return the report's path."""
    for path in (opts.data_recipe, opts.train_config):
        if not path.is_file():
            raise UserError(
                f"{path} not found: run the quickstart from a checkout of the project, or pass "
                "--data-recipe/--config"
            )
    fileio.claim_run_dir(opts.out, "quickstart", recognise=_is_unmarked_quickstart)
    corpus = build_corpus(opts)
    tokenizer = build_tokenizer(opts, corpus)
    tokens = build_tokens(opts, corpus, tokenizer)
    train_dir = train_model(opts, tokens)
    return write_report(opts, corpus, tokens, train_dir)


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
        build_shards(group_inputs([str(corpus)]), tokenizer, folder, val_fraction=0.02, overwrite=True)
    manifest = read_manifest(folder)
    for split, sources in manifest["splits"].items():
        counts = ", ".join(f"{src} {sum(s['tokens'] for s in shards):,}" for src, shards in sources.items())
        print(f"  {split}: {counts} tokens")
    return folder


def train_model(opts: QuickstartOptions, tokens: Path) -> Path:
    from llamafoundry.train import checkpointing
    from llamafoundry.train.recipe import load_run_recipe
    from llamafoundry.train.trainer import train

    train_dir = opts.out / "train"
    overrides = [
        "--data.tokens",
        str(tokens),
        "--output.dir",
        str(train_dir),
        "--data.mixture",
        str(opts.data_recipe),
        "--train.max_minutes",
        str(opts.minutes),
        *opts.overrides,
    ]
    cfg = load_run_recipe(opts.train_config, overrides)
    _stage(
        f"4/5 training: {cfg.model['preset']} for about {opts.minutes:g} minutes ({opts.train_config.name})"
    )
    if (train_dir / "model" / "config.json").is_file():
        print(f"  reusing the trained model in {train_dir / 'model'} (delete {train_dir} to train again)")
        return train_dir
    resume = checkpointing.latest_checkpoint(train_dir / "checkpoints") is not None
    if resume:
        print("  resuming the interrupted run from its last checkpoint")
    train(cfg, resume=resume)
    return train_dir


def samples(model_dir: Path, seed: int = 0) -> list[tuple[str, str]]:
    """Completions of the quickstart prompts (temperature 0.7, top-k 40, seeded)."""
    from llamafoundry.checkpoint import load_model
    from llamafoundry.inference.generate import Generator
    from llamafoundry.inference.sampling import SamplingParams

    model, tokenizer, _ = load_model(model_dir)
    generator = Generator(model, tokenizer)
    params = SamplingParams(max_new_tokens=64, temperature=0.7, top_k=40, seed=seed)
    return [(p, c.text) for p, c in zip(PROMPTS, generator.generate(PROMPTS, params), strict=True)]


def write_report(opts: QuickstartOptions, corpus: Path, tokens: Path, train_dir: Path) -> Path:
    from llamafoundry.data.shards import unigram_cross_entropy
    from llamafoundry.train.metrics import read_metrics

    _stage("5/5 samples and evaluation")
    completions = samples(train_dir / "model")
    for prompt, text in completions:
        print(f"--- {prompt!r}\n{prompt}{text}\n")
    val = [r for r in read_metrics(train_dir / "metrics.jsonl") if r.get("kind") == "val"]
    val_loss = val[-1]["loss"] if val else float("nan")
    baseline = unigram_cross_entropy(tokens)
    print(
        f"validation loss {val_loss:.3f} nats/token (perplexity {math.exp(val_loss):.1f}); the corpus's unigram "
        f"baseline is {baseline:.3f} (perplexity {math.exp(baseline):.1f})"
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
        f"- validation loss {val_loss:.3f} (perplexity {math.exp(val_loss):.1f}) vs unigram baseline "
        f"{baseline:.3f} (perplexity {math.exp(baseline):.1f})",
        "",
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
        {"val_loss": val_loss, "unigram_baseline": baseline, "samples": dict(completions)},
    )
    print(f"report: {report}")
    return report
