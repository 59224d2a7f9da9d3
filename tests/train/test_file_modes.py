"""Every file a run or an export writes has the mode the umask gives: not owner-only (safetensors' and
mkstemp's default), and not wider either (the umask in force when the file is made counts, not the one
when llamafoundry was imported)."""

import os

import pytest

from tests.helpers import tiny_train_args


@pytest.fixture
def umask_027():
    """A umask set after import, as a user's shell or a service manager may set it for the process."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_every_file_of_a_run_and_its_exports_has_the_umasks_mode(
    shakespeare_tokens, tmp_path, cli, umask_027
):
    run = tmp_path / "run"
    done = cli(*tiny_train_args(shakespeare_tokens, run, train__steps=2, checkpoint__every=1))
    assert done.returncode == 0, done.stderr
    for fmt, out in (("native", "native"), ("hf", "hf"), ("meta", "meta"), ("gguf", "m.gguf")):
        done = cli("convert", run / "model", "-o", tmp_path / out, "--to", fmt)
        assert done.returncode == 0, done.stderr
    written = list(tmp_path.rglob("*"))
    assert {p.name for p in written} >= {"model.safetensors", "consolidated.00.pth", "m.gguf", ".metadata"}
    wrong = {
        str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
        for p in written
        if p.stat().st_mode & 0o777 != (0o750 if p.is_dir() else 0o640)
    }
    assert not wrong
