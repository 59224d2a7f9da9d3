"""Token shards: documents tokenized once, stored as flat arrays the loader memory-maps.

Layout of a shard folder:

    manifest.json                 tokenizer, dtype, and per split / source / shard: tokens, documents, sha256
    train/<source>/00000.bin      raw little-endian uint16 (vocab <= 65536) or uint32 token ids
    val/<source>/00000.bin

Each document is stored as BOS + its tokens + EOS, so a window cut anywhere sees documents joined by
EOS (Sec. 2.1: every document is tokenized with the paper's tokenizer; no padding is ever trained on).
A document goes to the validation split by a hash of its id, so the split is stable across re-runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llamafoundry import fileio
from llamafoundry.data.textio import TRUNCATED_ERRORS
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer

MANIFEST = "manifest.json"
SPLITS = ("train", "val")
_BATCH_DOCS = 256  # documents encoded per SentencePiece call


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the shard folder
    tokens: int
    documents: int
    sha256: str


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def iter_texts(path: Path, doc_separator: str | None = None) -> Iterator[tuple[str, str]]:
    """(doc id, text) of every document in a .jsonl, .jsonl.gz, .jsonl.zst or plain text file.

    JSON lines need a "text" field (and may carry an "id"); a plain text file is one document, or
    several when `doc_separator` (e.g. TinyStories' "<|endoftext|>") is given.
    """
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.zst", ".json.gz")):
        with _open_text(path) as f, _reading(path):
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    text = None
                if not isinstance(text, str):
                    raise UserError(f"{path}:{lineno} is not a JSON object with a 'text' string")
                yield str(record.get("id", f"{name}:{lineno}")), text
        return
    with _open_text(path) as f, _reading(path):
        text = f.read()
    parts = text.split(doc_separator) if doc_separator else [text]
    for i, part in enumerate(parts):
        if part.strip():
            yield f"{name}:{i}", part.strip("\n")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Text that is not UTF-8, or a compressed file cut short, is a UserError naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); fix or drop the file"
        ) from None
    except TRUNCATED_ERRORS as exc:
        raise UserError(f"{path} is truncated or corrupt ({exc}); fix or drop the file") from None


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.name.endswith(".zst"):
            import zstandard

            return zstandard.open(path, "rt", encoding="utf-8", errors="strict")
        if path.name.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", errors="strict")
        return open(path, encoding="utf-8", errors="strict")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def group_inputs(specs: Sequence[str]) -> dict[str, list[Path]]:
    """Source -> files from command-line inputs: FILE (source "text"), SOURCE=FILE, or a folder written
    by a data recipe (one sub-folder of *.jsonl.zst shards per source)."""
    inputs: dict[str, list[Path]] = {}
    for spec in specs:
        source, _, name = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(name)
        if path.is_dir():
            shards = {d.name: sorted(d.rglob("*.jsonl.zst")) for d in sorted(path.iterdir()) if d.is_dir()}
            if not any(shards.values()):
                raise UserError(
                    f"{path} holds no <source>/*.jsonl.zst shards; run `llamafoundry data run` first"
                )
            for name, files in shards.items():
                inputs.setdefault(source or name, []).extend(files)
        else:
            inputs.setdefault(source or "text", []).append(path)
    return inputs


def is_val(doc_id: str, val_fraction: float) -> bool:
    """Stable held-out assignment from a hash of the document id."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


@dataclass(frozen=True)
class _Job:
    tokenizer: str
    input: str
    output: str
    source: str
    stem: str
    val_fraction: float
    doc_separator: str | None


def _tokenize_job(job: _Job) -> dict[str, dict]:
    """Worker: tokenize one input file into one train shard and one val shard."""
    tok = load_tokenizer(job.tokenizer)
    dtype = token_dtype(tok.vocab_size)
    writers = {
        split: _ShardWriter(Path(job.output) / split / job.source, job.stem, dtype) for split in SPLITS
    }
    try:
        batch: list[tuple[str, str]] = []
        for doc in iter_texts(Path(job.input), job.doc_separator):
            batch.append(doc)
            if len(batch) == _BATCH_DOCS:
                _write_batch(tok, batch, writers, job.val_fraction)
                batch = []
        _write_batch(tok, batch, writers, job.val_fraction)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return {split: writer.close() for split, writer in writers.items()}


def _write_batch(tok: Tokenizer, batch: list[tuple[str, str]], writers: dict, val_fraction: float) -> None:
    if not batch:
        return
    encoded = tok.encode_batch([text for _, text in batch], bos=True, eos=True)
    for (doc_id, _), ids in zip(batch, encoded, strict=True):
        writers["val" if is_val(doc_id, val_fraction) else "train"].add(ids)


class _ShardWriter:
    """Appends token arrays to `<folder>/<stem>.bin.tmp`, hashing as it goes."""

    def __init__(self, folder: Path, stem: str, dtype: np.dtype) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{stem}.bin"
        self.tmp = folder / f".{stem}.bin.tmp"
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed by close() or abort()
        self.hash = hashlib.sha256()
        self.dtype, self.tokens, self.documents = dtype, 0, 0

    def add(self, ids: Sequence[int]) -> None:
        data = np.asarray(ids, dtype=self.dtype).tobytes()
        self.file.write(data)
        self.hash.update(data)
        self.tokens += len(ids)
        self.documents += 1

    def close(self) -> dict:
        self.file.close()
        if self.tokens == 0:
            self.tmp.unlink()
            return {"tokens": 0, "documents": 0}
        os.replace(self.tmp, self.path)
        return {"tokens": self.tokens, "documents": self.documents, "sha256": self.hash.hexdigest()}

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def build_shards(
    inputs: dict[str, list[Path]],
    tokenizer_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    val_fraction: float = 0.005,
    workers: int | None = None,
    doc_separator: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Tokenize every input file (one shard per file and split) in parallel into a new folder, which
    then replaces `output` whole (an existing one only with `overwrite`, and only ours).

    `inputs` maps a source name (Table 1's, e.g. "github") to its files. A crash leaves `output` as it
    was.
    """
    output = Path(output)
    tokenizer_path = Path(tokenizer_path)
    tok = _sentencepiece(tokenizer_path)
    files = [(source, Path(p)) for source, paths in inputs.items() for p in paths]
    missing = [str(p) for _, p in files if not p.is_file()]
    if not files or missing:
        raise UserError(f"no input files to tokenize: {missing or 'none given'}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    manifest = {
        "tokenizer_sha256": hashlib.sha256(tok.serialized()).hexdigest(),
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "dtype": token_dtype(tok.vocab_size).name,
        "splits": {split: {} for split in SPLITS},
    }
    with fileio.atomic_dir(
        output, kind="token shards", overwrite=overwrite, recognise=_is_unmarked_shards
    ) as tmp:
        jobs = [
            _Job(str(tokenizer_path), str(path), str(tmp), source, f"{i:05d}", val_fraction, doc_separator)
            for i, (source, path) in enumerate(files)
        ]
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        # The bar closes (ends its line) before an error in a file is printed, not under it.
        with (
            tqdm(total=len(jobs), desc="tokenizing", unit="file") as bar,
            ProcessPoolExecutor(workers) as pool,
        ):
            for job, result in zip(jobs, pool.map(_tokenize_job, jobs), strict=True):
                for split, info in result.items():
                    if info["tokens"]:
                        shard = ShardInfo(
                            f"{split}/{job.source}/{job.stem}.bin",
                            info["tokens"],
                            info["documents"],
                            info["sha256"],
                        )
                        manifest["splits"][split].setdefault(job.source, []).append(dataclasses.asdict(shard))
                bar.update()
        if not any(manifest["splits"]["train"].values()):
            raise UserError("the inputs hold no text to train on (every document was empty)")
        fileio.write_bytes(tmp / "tokenizer.model", tok.serialized())  # the run and its model folder need it
        fileio.write_json(tmp / MANIFEST, manifest)
    return manifest


def _sentencepiece(path: Path) -> SentencePieceTokenizer:
    """The shards' tokenizer: training data is tokenized with a SentencePiece model only (the run and
    its model folders copy it as tokenizer.model)."""
    tok = load_tokenizer(path)
    if not isinstance(tok, SentencePieceTokenizer):
        raise UserError(
            f"{path} is a {tok.kind} tokenizer; token shards are built with a SentencePiece tokenizer.model "
            "(train one with `llamafoundry tokenizer train`)"
        )
    return tok


def _is_unmarked_shards(folder: Path) -> bool:
    """A shard folder from before output markers, so ours to replace: its manifest lists every shard in it
    (a split's folder of a source may be empty: no document of it went there)."""
    try:
        splits = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["splits"].values()
        shards = {shard["path"] for sources in splits for files in sources.values() for shard in files}
        folders = {f"{split}/{source}" for split in SPLITS for sources in splits for source in sources}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return fileio.holds_only(folder, {MANIFEST, "tokenizer.model", *shards, *folders})


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise UserError(
            f"token shard folder {folder} does not exist; build it with `llamafoundry data tokenize`"
        )
    if not path.is_file():
        raise UserError(
            f"{folder} has no {MANIFEST}: the shards are missing or were not finished; rebuild them"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not a token shard manifest; rebuild the shards") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise UserError(f"{path} is not a token shard manifest ({problem}); rebuild the shards")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What is wrong with the layout the loader reads, if anything."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("dtype") not in ("uint16", "uint32"):
        return f"dtype {manifest.get('dtype')!r} is not uint16 or uint32"
    if not _count(manifest.get("vocab_size")) or manifest["vocab_size"] < 1:
        return f"vocab_size {manifest.get('vocab_size')!r}"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not isinstance(splits.get("train"), dict):
        return "no train split"
    for split, sources in splits.items():
        if not isinstance(sources, dict) or not all(isinstance(s, list) for s in sources.values()):
            return f"split {split!r} is not a table of shard lists"
        for shard in (shard for shards in sources.values() for shard in shards):
            problem = _shard_problem(shard)
            if problem:
                return f"{split}: {problem}"
    return None


def _shard_problem(shard: object) -> str | None:
    if (
        not isinstance(shard, dict)
        or not isinstance(shard.get("sha256"), str)
        or not _count(shard.get("tokens"))
    ):
        return f"shard {shard!r} lacks its path, tokens or sha256"
    path = shard.get("path")
    # Shards live inside the folder: a path like "../x" or "/x" would read outside it.
    if not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts:
        return f"shard path {path!r} is not inside the folder"
    return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def open_shard(folder: Path, shard: dict, dtype: np.dtype, verify: bool) -> np.memmap:
    """Memory-map a shard after checking its size (always) and its sha256 (when `verify`)."""
    path = folder / shard["path"]
    expected = shard["tokens"] * dtype.itemsize
    if not path.is_file():
        raise UserError(f"token shard {path} listed in the manifest is missing; rebuild the shards")
    if path.stat().st_size != expected:
        raise UserError(
            f"token shard {path} has {path.stat().st_size} bytes, the manifest says {expected}: "
            "it is truncated or corrupt; rebuild the shards"
        )
    if verify:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        if digest.hexdigest() != shard["sha256"]:
            raise UserError(f"token shard {path} fails its sha256 check: it is corrupt; rebuild the shards")
    return np.memmap(path, dtype=dtype, mode="r")


def unigram_cross_entropy(folder: str | os.PathLike) -> float:
    """Cross-entropy (nats/token) of the validation split under the train split's unigram distribution
    (add-one smoothed): the loss of a model that ignores context, the bar learning must clear."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    dtype, vocab = np.dtype(manifest["dtype"]), manifest["vocab_size"]
    counts = np.zeros(vocab, dtype=np.float64)
    for shards in manifest["splits"]["train"].values():
        for shard in shards:
            counts += np.bincount(open_shard(folder, shard, dtype, verify=False), minlength=vocab)
    log_probs = np.log((counts + 1) / (counts.sum() + vocab))
    total, n = 0.0, 0
    for shards in manifest["splits"]["val"].values():
        for shard in shards:
            tokens = open_shard(folder, shard, dtype, verify=False)
            total -= float(log_probs[tokens].sum())
            n += len(tokens)
    if n == 0:
        raise UserError(f"{folder} has no validation tokens to measure the unigram baseline on")
    return total / n
