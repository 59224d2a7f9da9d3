"""Every command that writes an output leaves what it did not write as it found it (issue 12, item 2).

An existing folder of someone else's, or a regular file, at the output path survives byte for byte, with
a one-line error and a non-zero exit, with or without --overwrite. An output we wrote earlier is replaced
only with --overwrite, and only while nothing else has been put in it. A training run or a data run goes
on in its own run folder, which is how it resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.data.shards import build_shards
from llamafoundry.fileio import OUTPUT_MARKER
from llamafoundry.tokenizer import train_tokenizer
from tests.helpers import assert_user_error, tiny_train_args

TEXT = "corpora/tinyshakespeare/input.txt"


@dataclass(frozen=True)
class Command:
    """A writing command: its arguments for an output path, and the shape of what it writes there."""

    name: str
    argv: Callable[[dict, Path], list]
    folder: bool = True
    replaced: bool = True  # written whole (replaceable with --overwrite), not a run folder it resumes in


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    """What the commands read: a tokenizer, a model folder, documents, token shards, a data recipe."""
    root = tmp_path_factory.mktemp("inputs")
    lines = (shared_data / TEXT).read_text().splitlines()
    text = root / "text.txt"
    text.write_text("\n".join(lines[:3000]) + "\n")
    tok = train_tokenizer([text], root / "tokenizer.model", 512, input_sentence_size=0, num_threads=1)
    stories, _, _ = load_model(shared_data / "models/stories260K/stories260K.bin")
    model = save_model(root / "model", stories, tok)
    docs = root / "docs.jsonl"
    paragraphs = [p for p in (shared_data / TEXT).read_text().split("\n\n")[:300] if p.strip()]
    docs.write_text("".join(json.dumps({"id": str(i), "text": p}) + "\n" for i, p in enumerate(paragraphs)))
    recipe = root / "recipe.toml"
    recipe.write_text(f'[run]\noutput = "{root / "unused"}"\n[sources.c4]\ninputs = ["{docs}"]\n')
    wiki, web = root / "wiki.txt", root / "web.txt"
    wiki.write_text("\n".join(lines[:200]) + "\n")
    web.write_text("\n".join(lines[-200:]) + "\n")
    dump = root / "enwiki-pages-articles.xml"
    dump.write_text(
        "<mediawiki><siteinfo><dbname>enwiki</dbname></siteinfo><page><title>Plays</title><ns>0</ns>"
        f"<id>1</id><revision><id>2</id><text>{escape(text.read_text())}</text></revision></page></mediawiki>"
    )
    tokens = root / "tokens"
    build_shards({"books": [docs]}, root / "tokenizer.model", tokens, val_fraction=0.1, workers=1)
    return {
        "text": text,
        "tokenizer": root / "tokenizer.model",
        "model": model,
        "docs": docs,
        "recipe": recipe,
        "wiki": wiki,
        "web": web,
        "dump": dump,
        "tokens": tokens,
        "shared": shared_data,
    }


COMMANDS = [
    Command("convert", lambda i, out: ["convert", i["model"], "-o", out]),
    Command("convert --to hf", lambda i, out: ["convert", i["model"], "-o", out, "--to", "hf"]),
    Command("convert --to meta", lambda i, out: ["convert", i["model"], "-o", out, "--to", "meta"]),
    Command(
        "convert --to gguf", lambda i, out: ["convert", i["model"], "-o", out, "--to", "gguf"], folder=False
    ),
    Command("quantize", lambda i, out: ["quantize", i["model"], "-o", out]),
    Command(
        "data tokenize",
        lambda i, out: [
            "data",
            "tokenize",
            i["docs"],
            "--tokenizer",
            i["tokenizer"],
            "-o",
            out,
            "--workers",
            1,
        ],
    ),
    Command(
        "tokenizer train",
        lambda i, out: ["tokenizer", "train", i["text"], "-o", out, "--vocab-size", 400],
        folder=False,
    ),
    Command(
        "data train-classifier",
        lambda i, out: [
            "data",
            "train-classifier",
            "--positive",
            i["wiki"],
            "--negative",
            i["web"],
            "-o",
            out,
        ],
        folder=False,
    ),
    Command(
        "data train-reference-lm",
        lambda i, out: [
            "data",
            "train-reference-lm",
            i["dump"],
            "-o",
            out,
            "--order",
            2,
            "--vocab-size",
            400,
            "--quiet",
        ],
    ),
    Command(
        "eval",
        lambda i, out: [
            "eval",
            i["model"],
            "--tasks",
            "piqa",
            "--limit",
            2,
            "--data-dir",
            i["shared"],
            "-o",
            out,
        ],
    ),
    Command(
        "data run",
        lambda i, out: ["data", "run", i["recipe"], "--quiet", "--workers", 1, "-o", out],
        replaced=False,
    ),
    Command("train", lambda i, out: tiny_train_args(i["tokens"], out, train__steps=2), replaced=False),
    Command("quickstart", lambda i, out: ["quickstart", "-o", out, "--minutes", 0.01], replaced=False),
]
REPLACED = [c for c in COMMANDS if c.replaced]
ids = [c.name for c in COMMANDS]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder): what must not change."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def with_overwrite(command: Command) -> list[list[str]]:
    """The flags to try: none, and --overwrite where the command has it."""
    return [[], ["--overwrite"]] if command.replaced else [[]]


@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_a_folder_we_did_not_write_survives(command, inputs, tmp_path, cli):
    place = tmp_path / "place"
    theirs = place / "out"
    (theirs / "drafts").mkdir(parents=True)
    (theirs / "thesis.tex").write_text("five years of work\n")
    (theirs / "drafts" / "v1.tex").write_bytes(b"\x00\x01 binary too")
    before = snapshot(place)
    for flags in with_overwrite(command):
        result = cli(*command.argv(inputs, theirs), *flags)
        what = "did not write" if command.folder else "is a folder and this output is a file"
        assert_user_error(result, str(theirs), what)
        assert snapshot(place) == before, flags  # nothing changed, no temporary files left beside it


@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_a_regular_file_survives(command, inputs, tmp_path, cli):
    place = tmp_path / "place"
    place.mkdir()
    theirs = place / "out"
    theirs.write_bytes(b"someone's notes\n")
    for flags in with_overwrite(command):
        result = cli(*command.argv(inputs, theirs), *flags)
        what = "is not a file this command writes" if command.folder is False else "is a file"
        assert_user_error(result, str(theirs), what)
        assert snapshot(place) == {"out": b"someone's notes\n"}, flags


@pytest.mark.parametrize("command", REPLACED, ids=[c.name for c in REPLACED])
def test_our_output_is_replaced_only_with_overwrite_and_only_while_it_holds_nothing_else(
    command, inputs, tmp_path, cli
):
    out = tmp_path / "out"
    first = cli(*command.argv(inputs, out))
    assert first.returncode == 0, first.stderr
    before = snapshot(tmp_path)
    assert_user_error(cli(*command.argv(inputs, out)), str(out), "already exists; pass --overwrite")
    assert snapshot(tmp_path) == before
    inode = out.stat().st_ino
    again = cli(*command.argv(inputs, out), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert out.stat().st_ino != inode  # a new output took the old one's place
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # and the old one is gone, temporaries too
    if command.folder:
        (out / "notes.txt").write_text("added by the user")
        before = snapshot(tmp_path)
        refused = cli(*command.argv(inputs, out), "--overwrite")
        assert_user_error(refused, str(out), "holds notes.txt, which llamafoundry did not write")
        assert snapshot(tmp_path) == before


def test_a_model_from_the_hub_is_not_ours_though_it_has_our_file_names(inputs, tmp_path, cli):
    """The marker, not the file set, is what vouches: our HF export without its marker has exactly the
    names of a model downloaded from the Hugging Face Hub, and --overwrite must not delete that."""
    hub = tmp_path / "Llama-2-7b-hf"
    assert cli("convert", inputs["model"], "-o", hub, "--to", "hf").returncode == 0
    (hub / OUTPUT_MARKER).unlink()
    before = snapshot(tmp_path)
    result = cli("convert", inputs["model"], "-o", hub, "--to", "hf", "--overwrite")
    assert_user_error(result, str(hub), "which llamafoundry did not write")
    assert snapshot(tmp_path) == before


def test_outputs_from_before_markers_are_still_ours_when_they_say_so(inputs, tmp_path, cli):
    """A native folder names its format in config.json, a token shard folder lists its shards in its
    manifest: written before markers existed (and holding nothing else), they are replaced with
    --overwrite, so the quickstart and earlier exports keep working."""
    old = tmp_path / "old"
    assert cli("convert", inputs["model"], "-o", old).returncode == 0
    (old / OUTPUT_MARKER).unlink()
    assert_user_error(cli("quantize", inputs["model"], "-o", old), "already exists; pass --overwrite")
    assert cli("quantize", inputs["model"], "-o", old, "--overwrite").returncode == 0
    assert load_model(old)[0].quantization.method == "int8"
    tokens = tmp_path / "tokens"
    tokenize = ["data", "tokenize", inputs["docs"], "--tokenizer", inputs["tokenizer"], "-o", tokens]
    assert cli(*tokenize, "--workers", 1).returncode == 0
    (tokens / OUTPUT_MARKER).unlink()
    assert cli(*tokenize, "--workers", 1, "--overwrite").returncode == 0
    assert (tokens / OUTPUT_MARKER).is_file()


def test_a_link_at_the_output_path_is_never_replaced(inputs, tmp_path, cli):
    ours = tmp_path / "ours"
    assert cli("convert", inputs["model"], "-o", ours).returncode == 0
    link = tmp_path / "link"
    link.symlink_to(ours)
    before = snapshot(ours)
    assert_user_error(cli("convert", inputs["model"], "-o", link, "--overwrite"), str(link), "symbolic link")
    assert link.is_symlink() and snapshot(ours) == before


def test_a_data_run_continues_in_its_own_folder(inputs, tmp_path, cli):
    out = tmp_path / "corpus"
    args = ["data", "run", inputs["recipe"], "--quiet", "--workers", 1, "-o", out]
    assert cli(*args).returncode == 0
    shards = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.zst")}
    assert shards and cli(*args).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl.zst")} == shards  # resumed: nothing redone


def test_a_training_run_resumes_in_its_own_folder_and_no_other_command_takes_it(inputs, tmp_path, cli):
    run = tmp_path / "run"
    args = tiny_train_args(inputs["tokens"], run, train__steps=2)
    assert cli(*args).returncode == 0, "first run"
    assert_user_error(cli(*args), "already holds checkpoints; pass --resume")
    resumed = cli(*args, "--resume")  # finished already: it writes its own model folder again
    assert resumed.returncode == 0, resumed.stderr
    assert load_model(run / "model")[2].dim == 64
    before = snapshot(tmp_path)
    taken = cli("convert", inputs["model"], "-o", run, "--overwrite")
    assert_user_error(taken, str(run), "is a llamafoundry training run folder, which is never replaced")
    taken = cli("data", "run", inputs["recipe"], "--quiet", "-o", run)
    assert_user_error(taken, str(run), "holds a llamafoundry training run, not a data run")
    assert snapshot(tmp_path) == before
