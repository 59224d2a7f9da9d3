"""Resuming never unpickles checkpoint files our runs did not write: DCP's `.metadata` and the optimizer
entries of its `.distcp` files are pickles, which can run code. A checkpoint's manifest (sizes, and the
sha256 of every pickled byte) is checked before DCP reads anything; a folder without one, or that
differs from it, is refused in one line and left as it was."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from llamafoundry.train.checkpointing import MANIFEST
from tests.helpers import assert_user_error, tiny_train_args
from tests.train import conftest

shakespeare_tokens = conftest.shakespeare_tokens  # the fixture, shared with tests/train


class Planted:
    """Unpickling it makes the folder `path`: code that runs when a pickle is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def args(tokens: Path, out: Path, *extra: str) -> list[str]:
    return [*tiny_train_args(tokens, out, train__steps=2, checkpoint__every=2), *extra]


@pytest.fixture
def run(shakespeare_tokens, tmp_path, cli) -> Path:
    """A finished 2-step run, with its checkpoint step_00000002."""
    out = tmp_path / "run"
    assert cli(*args(shakespeare_tokens, out)).returncode == 0
    return out


def test_a_planted_metadata_pickle_is_refused_and_never_runs(shakespeare_tokens, run, tmp_path, cli):
    marker = tmp_path / "the planted code ran"
    pickle.loads(pickle.dumps(Planted(tmp_path / "probe")))  # the plant is live: loading it runs code
    assert (tmp_path / "probe").is_dir()
    folder = run / "checkpoints" / "step_00000002"
    size = (folder / ".metadata").stat().st_size
    (folder / ".metadata").write_bytes(pickle.dumps(Planted(marker)).ljust(size, b"."))  # same size

    result = cli(*args(shakespeare_tokens, run, "--resume"))
    assert_user_error(result, str(folder), ".metadata differs from what was saved", "not unpickled")
    assert not marker.exists()


def test_a_checkpoint_without_our_manifest_is_refused(shakespeare_tokens, run, cli):
    folder = run / "checkpoints" / "step_00000002"
    (folder / MANIFEST).unlink()  # as in checkpoints written before manifests, or by another program

    result = cli(*args(shakespeare_tokens, run, "--resume"))
    assert_user_error(result, str(folder), f"has no {MANIFEST}", "can run code")


def test_a_replaced_pickle_inside_a_shard_is_refused(shakespeare_tokens, run, tmp_path, cli):
    folder = run / "checkpoints" / "step_00000002"
    manifest = json.loads((folder / MANIFEST).read_text())
    offset, length, _ = manifest["files"]["__0_0.distcp"]["pickled"][0]
    shard = bytearray((folder / "__0_0.distcp").read_bytes())
    planted = pickle.dumps(Planted(tmp_path / "the planted code ran"))
    shard[offset : offset + length] = planted.ljust(length, b".")[:length]  # same size: only hashes tell
    (folder / "__0_0.distcp").write_bytes(bytes(shard))

    result = cli(*args(shakespeare_tokens, run, "--resume"))
    assert_user_error(result, "__0_0.distcp differs from what was saved", f"bytes {offset:,}-")
    assert not (tmp_path / "the planted code ran").exists()


def test_a_file_the_manifest_does_not_list_is_refused(shakespeare_tokens, run, cli):
    folder = run / "checkpoints" / "step_00000002"
    # DCP unpickles a rank's own __0.metadata when it cannot use .metadata.
    (folder / "__0.metadata").write_bytes(pickle.dumps(Planted(folder / "ran")))

    result = cli(*args(shakespeare_tokens, run, "--resume"))
    assert_user_error(result, "holds __0.metadata, which its manifest.json does not list")
