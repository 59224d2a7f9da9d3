"""Every reader of files we did not write, fed broken copies of a small valid file: the only error it may
raise is a UserError (the data sources skip and count what they cannot use), and each read ends within
DEADLINE_S and within MEMORY bytes more than the process already maps (issue 12, item 7).

Hypothesis draws the copies: cut, bytes overwritten, bytes spliced in, random bytes, and for the JSON and
TOML files random values (huge, negative, nan, strings, nulls, nested) in place of valid ones. The runs
are derandomized, so a failure repeats; `N` per reader keeps the file near a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import resource
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llamafoundry.checkpoint import export, load_model, save_model
from llamafoundry.config import ModelConfig
from llamafoundry.data.loader import TokenLoader
from llamafoundry.data.recipe import load_recipe
from llamafoundry.data.shards import build_shards, iter_texts
from llamafoundry.data.sources.commoncrawl import CommonCrawlReader
from llamafoundry.data.sources.jsonl import JsonlReader
from llamafoundry.data.sources.stackexchange import StackExchangeReader
from llamafoundry.data.sources.wikipedia import WikipediaReader
from llamafoundry.data.textio import read_shard
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import load_tokenizer, train_tokenizer
from llamafoundry.train.recipe import load_run_recipe, validate
from tests.conftest import REPO
from tests.helpers import write_llama2c

DEADLINE_S = 10
MEMORY = 1 << 30
N = 500  # inputs per reader (per test below)

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="measures memory in /proc")


class Hang(Exception):
    """A read that ran past DEADLINE_S (not a UserError, so it fails the test)."""


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Raise Hang past DEADLINE_S; fail allocations past MEMORY more (MemoryError, or torch's
    RuntimeError: neither is a UserError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + MEMORY
    previous = signal.signal(signal.SIGALRM, _hang)
    # And again every second: a Hang raised inside a gc callback is only printed.
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S, 1.0)
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _hang(*_: object) -> None:
    raise Hang(f"the read took over {DEADLINE_S} s")


def survives(read: Callable[[], object]) -> None:
    """`read()` returns, or raises a UserError, within the bounds."""
    with bounded(), contextlib.suppress(UserError):
        read()


FUZZ = settings(
    max_examples=N,
    deadline=None,  # the bounds above are the deadline; hypothesis's own would flake on a busy machine
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

# JSON and TOML values a hostile file may hold where a number belongs.
EDGES = st.sampled_from([0, -1, 1, 2**31, 2**63, 10**11, 10**400, 1e-300, 1e308, float("nan"), float("inf")])
SCALARS = st.none() | st.booleans() | st.integers() | EDGES | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` cut, with bytes overwritten, with bytes spliced in, or replaced by random bytes."""
    kind = draw(st.sampled_from(["cut", "overwrite", "splice", "random"]))
    if kind == "cut":
        return valid[: draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "overwrite" and valid:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        at = draw(st.integers(0, len(valid)))
        return valid[:at] + draw(st.binary(max_size=64)) + valid[at + draw(st.integers(0, 64)) :]
    return draw(st.binary(max_size=1024))


@st.composite
def json_edited(draw: st.DrawFn, valid: dict) -> dict:
    """`valid` with one to three keys, at any depth, set to a random value, removed or added."""
    value = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        tables = list(_tables(value))
        table = draw(st.sampled_from(tables))
        keys = sorted(table)
        op = draw(st.sampled_from(["set", "set", "remove", "add"] if keys else ["add"]))
        if op == "remove":
            del table[draw(st.sampled_from(keys))]
        else:
            key = draw(st.sampled_from(keys)) if op == "set" else draw(st.text(max_size=12))
            table[key] = draw(JSON_VALUES)
    return value


def _tables(value: object) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _tables(item)


def json_file(valid: dict) -> st.SearchStrategy[bytes]:
    """A broken copy of a JSON file: edited values, or mutated bytes of the valid text."""
    text = json.dumps(valid).encode()
    return json_edited(valid).map(lambda v: json.dumps(v).encode()) | mutated(text)


# ---- model folders ------------------------------------------------------------------------------

CFG = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=400, multiple_of=16, max_seq_len=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """A tiny model in every format we read, and its tokenizer."""
    root = tmp_path_factory.mktemp("models")
    text = shared_data / "corpora" / "tinyshakespeare" / "input.txt"
    tokenizer = train_tokenizer([text], root / "tokenizer.model", 400, input_sentence_size=2000)
    torch.manual_seed(0)
    model = Transformer(CFG)
    return {
        "tokenizer": root / "tokenizer.model",
        "native": save_model(root / "native", model, tokenizer),
        "meta": export(root / "meta", model, tokenizer, "meta", shards=2),
        "hf": export(root / "hf", model, tokenizer, "hf"),
        "llama2c": write_llama2c(root / "tiny.bin", model),
    }


def _replaced(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder_with(models: dict, kind: str, tmp: Path, name: str) -> Path:
    """A scratch copy of the `kind` folder whose file `name` the examples of one test rewrite."""
    folder = tmp / f"{kind}-{name}"
    folder.mkdir()
    for f in models[kind].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_the_valid_files_load(models: dict) -> None:
    """The seeds of every fuzz below are valid: what breaks is what the fuzzer changed."""
    for kind in ("native", "meta", "hf", "llama2c"):
        _, _, cfg = load_model(models[kind])
        assert cfg.dim == CFG.dim and cfg.vocab_size == CFG.vocab_size, kind


@pytest.mark.parametrize(
    ("kind", "name"), [("native", "config.json"), ("hf", "config.json"), ("meta", "params.json")]
)
def test_model_config_files(kind: str, name: str, models: dict, tmp_path: Path) -> None:
    folder = _folder_with(models, kind, tmp_path, name)
    valid = json.loads((models[kind] / name).read_text())

    @FUZZ
    @given(json_file(valid))
    def fuzz(data: bytes) -> None:
        (folder / name).write_bytes(data)
        survives(lambda: load_model(folder))

    fuzz()


def test_safetensors_files(models: dict, tmp_path: Path) -> None:
    folder = _folder_with(models, "native", tmp_path, "model.safetensors")
    valid = (models["native"] / "model.safetensors").read_bytes()
    length = struct.unpack("<Q", valid[:8])[0]
    header, body = json.loads(valid[8 : 8 + length]), valid[8 + length :]

    def packed(value: dict) -> bytes:
        text = json.dumps(value).encode()
        return struct.pack("<Q", len(text)) + text + body

    headers = json_edited(header).map(packed)  # dtypes, shapes and offsets that lie about the data
    prefix = mutated(valid[: 8 + length]).map(lambda head: head + body)  # a damaged header, real data

    @FUZZ
    @given(headers | prefix | mutated(valid))
    def fuzz(data: bytes) -> None:
        (folder / "model.safetensors").write_bytes(data)
        survives(lambda: load_model(folder))

    fuzz()


def test_hf_shard_index(models: dict, tmp_path: Path) -> None:
    folder = _folder_with(models, "hf", tmp_path, "index")
    valid = {"metadata": {"total_size": 1}, "weight_map": {"lm_head.weight": "model.safetensors"}}

    @FUZZ
    @given(json_file(valid))
    def fuzz(data: bytes) -> None:
        (folder / "model.safetensors.index.json").write_bytes(data)
        survives(lambda: load_model(folder))

    fuzz()


PICKLABLE = st.recursive(
    SCALARS | st.builds(torch.zeros, st.lists(st.integers(0, 3), max_size=3)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=24) | st.integers(), inner, max_size=4)
    ),
    max_leaves=8,
)


def test_meta_pth_files(models: dict, tmp_path: Path) -> None:
    """consolidated.01.pth broken (the model's other half stays valid): its zip bytes, or whatever
    objects `torch.save` writes in its place, or its state dict with entries replaced."""
    folder = _folder_with(models, "meta", tmp_path, "consolidated.01.pth")
    pth = models["meta"] / "consolidated.01.pth"
    valid, state = pth.read_bytes(), torch.load(pth, weights_only=True)

    def saved(obj: object) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    edited = st.builds(
        lambda key, value: saved(state | {key: value}), st.sampled_from(sorted(state)), PICKLABLE
    )

    @FUZZ
    @given(mutated(valid) | PICKLABLE.map(saved) | edited)
    def fuzz(data: bytes) -> None:
        (folder / "consolidated.01.pth").write_bytes(data)
        survives(lambda: load_model(folder))

    fuzz()


def test_llama2c_files(models: dict, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.bin"
    valid = models["llama2c"].read_bytes()
    header = list(struct.unpack("<7i", valid[:28]))
    numbers = st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 2, 1 << 20, 1 << 30])
    headers = st.lists(st.tuples(st.integers(0, 6), numbers), min_size=1, max_size=3).map(
        lambda edits: struct.pack("<7i", *_with(header, edits)) + valid[28:]
    )

    @FUZZ
    @given(headers | mutated(valid))
    def fuzz(data: bytes) -> None:
        survives(lambda: load_model(_replaced(path, data)))

    fuzz()


def _with(values: list, edits: list[tuple[int, object]]) -> list:
    values = list(values)
    for index, value in edits:
        values[index] = value
    return values


def test_tokenizer_model_files(models: dict, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.model"
    valid = models["tokenizer"].read_bytes()

    def use(data: bytes) -> None:
        tok = load_tokenizer(_replaced(path, data))
        tok.decode(tok.encode("To be, or not to be: 1234 é 😀", eos=True))

    @FUZZ
    @given(mutated(valid))
    @example(valid.replace(b"<s>", b"<n>", 1))  # no BOS piece: encode gave id -1, decode an IndexError
    def fuzz(data: bytes) -> None:
        survives(lambda: use(data))

    fuzz()


# ---- recipes ------------------------------------------------------------------------------------


def _toml(value: object) -> str:
    """A TOML literal of a scalar or a list of them (a dict becomes an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and abs(value) == float("inf"):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
        )
    return json.dumps(str(value))


def _toml_document(tables: dict) -> bytes:
    lines = []
    for section, table in tables.items():
        if not isinstance(table, dict):
            lines.append(f"{json.dumps(section)} = {_toml(table)}")
            continue
        lines.append(f"[{json.dumps(section)}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines).encode()


def test_run_recipes(tmp_path: Path) -> None:
    """A training recipe file, then validated as `train` does; and random --section.key overrides."""
    valid_text = (REPO / "configs" / "tiny-cpu.toml").read_bytes()
    valid = load_run_recipe(REPO / "configs" / "tiny-cpu.toml").to_dict()
    path = tmp_path / "run.toml"
    words = st.sampled_from(
        ["--train.lr", "--train.steps", "--model.dim", "--eval.every", "--x.y", "nan", "-1"]
    )
    overrides = st.lists(words | st.text(max_size=10), max_size=6)

    def read(data: bytes, extra: list[str]) -> None:
        cfg = load_run_recipe(_replaced(path, data), extra)
        validate(cfg)

    @FUZZ
    @given(json_edited(valid).map(_toml_document) | mutated(valid_text), overrides)
    def fuzz(data: bytes, extra: list[str]) -> None:
        survives(lambda: read(data, extra))

    fuzz()


def test_data_recipes(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "hello"}\n')
    valid = {
        "run": {"output": str(tmp_path / "out"), "workers": 1},
        "sources": {
            "c4": {
                "reader": "jsonl",
                "inputs": [str(docs)],
                "group_size": 0,
                "stages": [{"stage": "line_dedup"}],
            }
        },
        "mixture": {"c4": {"weight": 1.0, "epochs": 1.0}},
    }
    path = tmp_path / "data.toml"

    @FUZZ
    @given(json_edited(valid).map(_toml_document) | mutated(_toml_document(valid)))
    def fuzz(data: bytes) -> None:
        survives(lambda: load_recipe(_replaced(path, data)))

    fuzz()


# ---- corpora ------------------------------------------------------------------------------------


def _record(kind: str, number: int, content_type: str, block: bytes) -> bytes:
    """One WARC record, written out by hand so the seed is the same bytes every run."""
    headers = (
        f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-00000000000{number}>"
        f"\r\nWARC-Target-URI: https://example.com/{number}\r\nWARC-Date: 2024-05-18T01:58:10Z\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(block)}\r\n\r\n"
    )
    return headers.encode() + block + b"\r\n\r\n"


HTML = b"<html><body><p>A page about bread.</p></body></html>"
WARC = _record("conversion", 1, "text/plain", b"Escopete is a town.\nIt has a church.\n") + _record(
    "response",
    2,
    "application/http; msgtype=response",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(HTML), HTML),
)


def _compressed(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data)
    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def _files(valid: bytes, suffixes: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(suffix, bytes): the plain text broken then compressed, or the compressed file broken."""
    broken_text = st.tuples(st.sampled_from(suffixes), mutated(valid)).map(
        lambda s: (s[0], _compressed(s[1], s[0]))
    )
    broken_file = st.sampled_from(suffixes).flatmap(
        lambda x: st.tuples(st.just(x), mutated(_compressed(valid, x)))
    )
    return broken_text | broken_file


def _read_all(reader: object, path: Path) -> None:
    for _ in reader.read(path):
        pass


def test_warc_and_wet_files(tmp_path: Path) -> None:
    @FUZZ
    @given(_files(WARC, ["", ".gz"]))
    @example(("", WARC[: WARC.index(b"WARC-Type: response") + 19]))  # warcio: AttributeError
    def fuzz(file: tuple[str, bytes]) -> None:
        path = _replaced(tmp_path / f"crawl.warc{file[0]}", file[1])
        survives(lambda: _read_all(CommonCrawlReader(), path))

    fuzz()


WIKI = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="en">
<siteinfo><dbname>enwiki</dbname><base>https://en.wikipedia.org/wiki/Main_Page</base>
<namespaces><namespace key="6">File</namespace><namespace key="14">Category</namespace></namespaces></siteinfo>
<page><title>Escopete</title><ns>0</ns><id>10</id><revision><id>5</id><text>'''Escopete''' is a
[[municipality|town]] in {{Country|Spain}}.<ref>Census</ref>
== History ==
Founded in [[1200]]. [[File:Map.png|thumb]] [[Category:Towns]]
== References ==
{{reflist}}</text></revision></page>
<page><title>Old</title><ns>0</ns><id>11</id><redirect title="Escopete" /><revision><text>#REDIRECT</text></revision></page>
</mediawiki>
"""
# Entities that expand a billion times: expat refuses them rather than filling memory.
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9))
    + b"]><mediawiki><page><title>x</title><ns>0</ns><revision><text>&j;</text></revision></page></mediawiki>"
)


def test_wikipedia_xml_dumps(tmp_path: Path) -> None:
    @FUZZ
    @given(_files(WIKI, ["", ".gz"]))
    @example(("", LAUGHS))
    @example(("", b'<?xml version="1.0" encoding="atf-8"?>' + WIKI))  # LookupError
    def fuzz(file: tuple[str, bytes]) -> None:
        path = _replaced(tmp_path / f"enwiki-pages-articles.xml{file[0]}", file[1])
        survives(lambda: _read_all(WikipediaReader(), path))

    fuzz()


POSTS = b"""<?xml version="1.0" encoding="utf-8"?>
<posts>
  <row Id="1" PostTypeId="1" Score="3" Title="Reversing a list" Body="&lt;p&gt;How?&lt;/p&gt;" Tags="|python|" />
  <row Id="2" PostTypeId="2" ParentId="1" Score="5" Body="&lt;pre&gt;xs[::-1]&lt;/pre&gt;" />
  <row Id="3" PostTypeId="2" ParentId="1" Score="1" Body="&lt;p&gt;reversed(xs)&lt;/p&gt;" />
</posts>
"""


def test_stackexchange_posts(tmp_path: Path) -> None:
    @FUZZ
    @given(_files(POSTS, ["", ".gz", ".zst"]))
    @example(("", POSTS.replace(b'ParentId="1" Score="5"', b'ParentId="x" Score="5"')))  # ValueError
    @example(("", POSTS.replace(b'Id="3"', b'Id="99999999999999999999"')))  # SQLite: OverflowError
    @example(("", b'<?xml version="1.0" encoding="atf-8"?>' + POSTS[POSTS.index(b"<posts>") :]))
    def fuzz(file: tuple[str, bytes]) -> None:
        path = _replaced(tmp_path / f"Posts.xml{file[0]}", file[1])
        survives(lambda: _read_all(StackExchangeReader(site="x.stackexchange.com"), path))

    fuzz()


JSONL = b"".join(
    json.dumps({"id": f"d{i}", "text": text, "source": "c4", "meta": {"url": "u"}}).encode() + b"\n"
    for i, text in enumerate(["To be, or not to be.", "caf\u00e9 \u00fcber", "line one\nline two"])
)


def test_jsonl_files(tmp_path: Path) -> None:
    """The c4/JSONL source, our document shards, and `data tokenize`'s text reader."""

    def read(path: Path) -> None:
        _read_all(JsonlReader(), path)
        for reader in (read_shard, iter_texts):
            with contextlib.suppress(UserError):  # each reader raises its own; all three must run
                for _ in reader(path):
                    pass

    @FUZZ
    @given(_files(JSONL, ["", ".gz", ".zst"]))
    def fuzz(file: tuple[str, bytes]) -> None:
        path = _replaced(tmp_path / f"docs.jsonl{file[0]}", file[1])
        survives(lambda: read(path))

    fuzz()


# ---- token shards -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    docs = root / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"text": f"To be, or not to be, {i} times."}) + "\n" for i in range(60))
    )
    build_shards({"books": [docs]}, models["tokenizer"], root / "tokens", val_fraction=0.2, workers=1)
    return root / "tokens"


def test_token_shards(shards: Path, tmp_path: Path) -> None:
    """manifest.json broken, or the train shard broken, then read as training reads both splits."""
    folder = tmp_path / "tokens"
    for f in shards.rglob("*"):
        if f.is_file():
            (folder / f.relative_to(shards)).parent.mkdir(parents=True, exist_ok=True)
            (folder / f.relative_to(shards)).write_bytes(f.read_bytes())
    manifest = json.loads((shards / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["books"][0]["path"]
    valid_shard = (shards / shard).read_bytes()

    def read() -> None:
        for split in ("train", "val"):
            TokenLoader(folder, 8, 2, split=split).next_step()

    @FUZZ
    @given(
        json_file(manifest).map(lambda m: (m, valid_shard)) | mutated(valid_shard).map(lambda b: (None, b))
    )
    def fuzz(files: tuple[bytes | None, bytes]) -> None:
        (folder / "manifest.json").write_bytes(files[0] or json.dumps(manifest).encode())
        (folder / shard).write_bytes(files[1])
        survives(read)

    fuzz()


def test_the_valid_corpora_read(tmp_path: Path) -> None:
    """The corpus seeds above are valid: each reader finds their documents and skips nothing."""
    seeds = [
        (CommonCrawlReader(), "crawl.warc", WARC, 2),
        (WikipediaReader(), "enwiki.xml", WIKI, 1),
        (StackExchangeReader(site="x"), "Posts.xml", POSTS, 1),
        (JsonlReader(), "docs.jsonl", JSONL, 3),
    ]
    for reader, name, data, count in seeds:
        docs = list(reader.read(_replaced(tmp_path / name, data)))
        assert len(docs) == count and not reader.stats.dropped, (name, reader.stats.dropped)
