"""A checkpoint that cannot be written or read ends the run with one line naming the cause and the fix, and
loses nothing: a full disk, a read-only folder, a truncated shard, a missing `.metadata`. The checkpoint
before stays the one to resume from, and what an interrupted save left is removed at the next start."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamafoundry.train.checkpointing import complete_checkpoints, verify_manifest
from tests.helpers import assert_user_error, tiny_train_args
from tests.train import conftest

shakespeare_tokens = conftest.shakespeare_tokens  # the fixture, shared with tests/train


def args(tokens: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        *tiny_train_args(tokens, out, train__steps=steps, checkpoint__every=2, checkpoint__keep=2),
        *extra,
    ]


def on_small_disks(
    tmp_path: Path, mounts: list[tuple[str, Path]], cli_args: list
) -> subprocess.CompletedProcess:
    """`llamafoundry ARGS` in a private mount namespace with a fresh tmpfs at each (options, folder) of
    `mounts`; what the run left under tmp_path/disk is copied to tmp_path/left (the mounts go with the
    namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("mounting a small tmpfs needs root and unshare")
    mount = " && ".join(
        f"mkdir -p {folder} && mount -t tmpfs -o {options} tmpfs {folder}" for options, folder in mounts
    )
    cli = shlex.join([sys.executable, "-m", "llamafoundry.cli", *map(str, cli_args)])
    script = (
        f"({mount}) || exit 99; {cli}; code=$?; cp -a {tmp_path / 'disk'} {tmp_path / 'left'}; exit $code"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny model: one thread is faster on a busy machine
    )
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return result


def test_a_full_disk_is_one_line_and_the_checkpoint_before_resumes(shakespeare_tokens, tmp_path, cli):
    # 3 MB hold one 2.3 MB checkpoint of the tiny model, not two.
    disk = tmp_path / "disk"
    result = on_small_disks(tmp_path, [("size=3m", disk)], args(shakespeare_tokens, disk / "run", 4))
    assert_user_error(result, "No space left on device while saving checkpoint step 4", "free space")
    run = tmp_path / "left" / "run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002"]
    verify_manifest(run / "checkpoints" / "step_00000002")

    resumed = cli(*args(shakespeare_tokens, run, 4, "--resume"))  # on a disk with room
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model" / "model.safetensors").is_file()


def test_a_read_only_output_dir_is_one_line(shakespeare_tokens, tmp_path):
    disk = tmp_path / "disk"
    result = on_small_disks(tmp_path, [("ro,size=1m", disk)], args(shakespeare_tokens, disk / "run", 2))
    assert_user_error(result, "cannot write to output.dir", "Read-only file system", "writable")


def test_a_read_only_checkpoint_folder_is_one_line(shakespeare_tokens, tmp_path):
    disk = tmp_path / "disk"
    mounts = [("size=8m", disk), ("ro,size=1m", disk / "run" / "checkpoints")]
    result = on_small_disks(tmp_path, mounts, args(shakespeare_tokens, disk / "run", 4))
    assert_user_error(result, "Read-only file system while saving checkpoint step 2", "writable")


@pytest.mark.parametrize("damage", ["truncate a shard", "delete .metadata"])
def test_a_damaged_checkpoint_is_refused_in_one_line_and_left_alone(
    shakespeare_tokens, tmp_path, cli, damage
):
    run = tmp_path / "run"
    assert cli(*args(shakespeare_tokens, run, 4)).returncode == 0
    latest = run / "checkpoints" / "step_00000004"
    if damage == "truncate a shard":
        shard = latest / "__0_0.distcp"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        expected = ["damaged", "__0_0.distcp has", "truncated"]
    else:
        (latest / ".metadata").unlink()
        expected = ["damaged", ".metadata is missing"]
    files = sorted((p.name, p.stat().st_size) for p in latest.iterdir())

    result = cli(*args(shakespeare_tokens, run, 4, "--resume"))
    assert_user_error(result, str(latest), *expected, "to resume from the checkpoint before it")
    assert sorted((p.name, p.stat().st_size) for p in latest.iterdir()) == files

    shutil.move(latest, tmp_path / "set-aside")  # as the message says
    resumed = cli(*args(shakespeare_tokens, run, 4, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert [p.name for p in complete_checkpoints(run / "checkpoints")] == ["step_00000002", "step_00000004"]
    verify_manifest(latest)


def test_what_an_interrupted_save_left_is_removed_at_the_next_start(shakespeare_tokens, tmp_path, cli):
    run = tmp_path / "run"
    assert cli(*args(shakespeare_tokens, run, 2)).returncode == 0
    left = run / "checkpoints" / "step_00000003.tmp"  # a save killed mid-write leaves this
    left.mkdir()
    (left / "__0_0.distcp").write_bytes(b"partial")
    ours_not = run / "checkpoints" / "notes"  # not ours: stays
    ours_not.mkdir()

    assert cli(*args(shakespeare_tokens, run, 4, "--resume")).returncode == 0
    assert not left.exists() and ours_not.is_dir()
