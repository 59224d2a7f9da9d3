"""Generated code runs only in the sandbox: hostile programs time out or fail, the harness goes on, and
nothing outside the program's scratch directory changes. Each case runs with the kernel's layers
(namespaces, Landlock) and with them switched off, where the audit hook must stand in."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from llamafoundry.eval.sandbox import Limits, run_program

MODES = {"kernel": Limits(timeout_s=2.0), "fallback": Limits(timeout_s=2.0, kernel_layers=False)}


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in sorted(root.rglob("*"))}


def sandbox_processes() -> list[str]:
    """Processes still running our sandbox child (there must be none once a run has returned)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"llamafoundry/eval/sandbox.py" in cmdline and int(pid) != os.getpid():
            found.append(pid)
    return found


@pytest.fixture
def world(tmp_path: Path, monkeypatch) -> Path:
    """A fake home and files outside any sandbox, to check that nothing there changes."""
    home = tmp_path / "home"
    (home / "documents").mkdir(parents=True)
    (home / "documents/thesis.txt").write_text("years of work")
    (tmp_path / "outside.txt").write_text("untouched")
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    yield server
    server.close()


def hostile_programs(world: Path, port: int) -> dict[str, str]:
    return {
        "infinite loop": "while True:\n    pass\n",
        "sleeps forever": "import time\ntime.sleep(3600)\n",
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "10 GB allocation": "blob = bytearray(10 * 2**30)\nprint(len(blob))\n",
        "writes outside": f"open({str(world / 'outside.txt')!r}, 'w').write('pwned')\n",
        "creates outside": f"open({str(world / 'new.txt')!r}, 'w').write('pwned')\n",
        "deletes outside": f"import shutil\nshutil.rmtree({str(world / 'home')!r})\n",
        "opens a socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n",
        "rm -rf ~": "import os\nassert os.system('rm -rf ~') == 0\nassert os.system('rm -rf ~/..') == 0\n",
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_hostile_programs_time_out_or_fail_and_change_nothing(mode: str, world: Path, listener):
    limits = MODES[mode]
    before = snapshot(world)
    for name, source in hostile_programs(world, listener.getsockname()[1]).items():
        result = run_program(source, limits)
        assert result.status in ("timeout", "failed"), f"{name}: {result}"
        assert result.wall_s < limits.timeout_s + 5, name
        # The harness goes on: the next program runs normally.
        benign = run_program("import os\nprint(os.getcwd() == os.environ['HOME'])\n", limits)
        assert (benign.status, benign.stdout) == ("passed", "True\n"), f"after {name}: {benign}"
    assert snapshot(world) == before
    with pytest.raises(TimeoutError):
        listener.accept()  # no connection ever arrived
    deadline = time.monotonic() + 5
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []


def test_layers_in_force_are_reported():
    kernel = run_program("pass\n", MODES["kernel"]).isolation
    fallback = run_program("pass\n", MODES["fallback"]).isolation
    assert "rlimits" in kernel and "rlimits" in fallback
    # Where the kernel refuses namespaces or Landlock, the audit hook takes that job.
    assert ("netns" in kernel) or ("audit-hook:network" in kernel)
    assert ("landlock" in kernel) or ("audit-hook:files" in kernel)
    assert {"audit-hook:network", "audit-hook:files"} <= set(fallback)


def test_scratch_directory_is_cwd_home_and_removed_afterwards():
    result = run_program(
        "import os\nopen('note.txt', 'w').write('ok')\nprint(os.getcwd())\nprint(os.environ['HOME'])\n"
    )
    cwd, home = result.stdout.split()
    assert result.status == "passed" and cwd == home
    assert Path(cwd).name.startswith("llamafoundry-sandbox-")
    assert not Path(cwd).exists()


def test_exit_status_decides_pass_or_fail():
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]\n").status == "passed"
    failed = run_program("assert 1 + 1 == 3\n")
    assert failed.status == "failed" and "AssertionError" in failed.stderr
    assert run_program("raise SystemExit(0)\n").status == "passed"
