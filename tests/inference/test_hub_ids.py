"""Hugging Face hub ids (`org/name`) name models in every command, read from huggingface_hub's cache.

The cache is laid out as huggingface_hub keeps it (models--org--name/refs/main naming a commit whose
snapshot folder holds the files); commands run in their own process with HF_HUB_CACHE pointing at it and
the hub offline, as on a machine with no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers import assert_user_error

from llamafoundry.checkpoint import export, load_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(stories_path: Path, tok512, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding stories260K as the Hugging Face repo `acme/stories-260k`."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--acme--stories-260k"
    model, _, _ = load_model(stories_path)
    export(repo / "snapshots" / COMMIT, model, tok512, "hf")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def _offline(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llamafoundry.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_info_and_generate_read_a_cached_hub_id(hub_cache: Path, tok512, stories) -> None:
    info = _offline(hub_cache, "info", "acme/stories-260k")
    assert info.returncode == 0, info.stderr
    assert "format:     hf" in info.stdout
    assert f"tokenizer:  {tok512.vocab_size} pieces" in info.stdout

    prompt = "Once upon a time"
    generated = _offline(
        hub_cache, "generate", "acme/stories-260k", prompt, "--temperature", "0", "--max-new-tokens", "12"
    )
    assert generated.returncode == 0, generated.stderr
    ids = tok512.encode(prompt)
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(stories(torch.tensor([ids]))[0, -1].argmax()))
    assert generated.stdout.strip() == tok512.decode(ids).strip()


def test_convert_writes_a_hub_id_as_a_local_folder(hub_cache: Path, stories, tmp_path: Path) -> None:
    out = tmp_path / "native"
    done = _offline(hub_cache, "convert", "acme/stories-260k", "-o", str(out))
    assert done.returncode == 0, done.stderr
    converted, _, _ = load_model(out)
    tokens = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        torch.testing.assert_close(converted(tokens), stories(tokens), atol=1e-5, rtol=0)


def test_an_id_not_in_the_cache_is_one_line_naming_it_offline(hub_cache: Path) -> None:
    for command in (["info"], ["eval", "--tasks", "piqa"]):
        done = _offline(hub_cache, *command, "acme/not-downloaded")
        assert_user_error(done, "acme/not-downloaded", "not in the Hugging Face cache")


def test_local_paths_and_presets_are_never_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamafoundry.checkpoint.hub import is_hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert not is_hub_id("runs/x")  # exists here: a path
    assert is_hub_id("meta-llama/Llama-3.2-1B")
    for name in ("llama-7b", "../escape/x", "/abs/path", "a/b/c", ".hidden/x", "org/"):
        assert not is_hub_id(name), name
