"""Generated code runs only in the sandbox, and the sandbox holds whoever runs the harness.

Each hostile program below is written so that its last line runs only if its attack worked (it read a
secret, touched a file outside its scratch, reached a socket, started more processes than allowed, or
passed its checks without running them). The whole suite runs with the harness as root (as in most
containers) and as an unprivileged user: a program escapes when it passes, when a planted secret shows
in its output, or when the world outside it changed. Both runs must show 0 escapes.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llamafoundry.eval import sandbox
from llamafoundry.eval.sandbox import MINIMUM_LAYERS, Limits, SandboxUnavailable, run_program, run_programs

LIMITS = Limits(timeout_s=3.0, max_processes=16, scratch_bytes=8 * 2**20)
USER = pwd.getpwnam("nobody")
ENV_SECRET = "hf_" + secrets.token_hex(8)
FILE_SECRET = "secret-" + secrets.token_hex(8)
PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """Things outside any sandbox that a program must neither read nor change."""

    root: Path
    tcp_port: int
    abstract_name: str
    listeners: list[socket.socket]

    def snapshot(self) -> dict[str, tuple]:
        entries = {}
        for path in sorted(self.root.rglob("*")):
            st = path.lstat()
            xattrs = () if path.is_socket() else tuple(os.listxattr(path, follow_symlinks=False))
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            entries[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, xattrs, content)
        return entries

    def connections(self) -> int:
        """How many connections reached our listeners."""
        count = 0
        for listener in self.listeners:
            listener.setblocking(False)
            try:
                while True:
                    listener.accept()[0].close()
                    count += 1
            except BlockingIOError:
                pass
        return count


def make_world(owner: pwd.struct_passwd) -> Iterator[World]:
    """Files and sockets owned by `owner` with 0600 modes: without the sandbox, its programs could reach them."""
    root = Path(tempfile.mkdtemp(prefix="llamafoundry-world-"))
    (root / "home/documents").mkdir(parents=True)
    (root / "home/documents/thesis.txt").write_text("years of work")
    (root / "outside.txt").write_text("untouched")
    (root / "private.txt").write_text(FILE_SECRET)
    (root / "private.txt").chmod(0o600)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(root / "agent.sock"))
    (root / "agent.sock").chmod(0o600)
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = "llamafoundry-test-" + secrets.token_hex(4)
    abstract.bind("\0" + abstract_name)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    listeners = [unix, abstract, tcp]
    for s in listeners:
        s.listen(8)
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    try:
        yield World(root, tcp.getsockname()[1], abstract_name, listeners)
    finally:
        for s in listeners:
            s.close()
        shutil.rmtree(root)


@pytest.fixture
def world_of_root() -> Iterator[World]:
    yield from make_world(pwd.getpwuid(os.getuid()))


@pytest.fixture
def world_of_user() -> Iterator[World]:
    yield from make_world(USER)


def hostile_programs(world: World) -> dict[str, str]:
    """name -> a program whose last line runs only if its attack worked."""
    w = world.root
    spawn = (
        "import _posixsubprocess, os\n"
        "pids = []\n"
        "for _ in range(40):\n"
        "    r, w = os.pipe()\n"
        "    try:\n"  # Python 3.11's signature: subprocess.Popen without its audit event
        "        pids.append(_posixsubprocess.fork_exec(['/bin/sleep', '5'], [b'/bin/sleep'], True, (), None, None,"
        " -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False))\n"
        "    except OSError:\n"
        "        break\n"
        "assert len(pids) >= 40, len(pids)\n"
    )
    return {
        # resources
        "infinite loop": "while True:\n    pass\n",
        "sleeps forever": "import time\ntime.sleep(3600)\n",
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "10 GB allocation": "blob = bytearray(10 * 2**30)\n",
        "40 processes by fork": (
            "import os, time\nn = 0\nfor _ in range(40):\n    if os.fork() == 0:\n        time.sleep(5)\n"
            "        os._exit(0)\n    n += 1\nassert n >= 40\n"
        ),
        "40 processes past the audit hook": spawn,
        "1 GB into the scratch": (
            "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(2**20))\n"
        ),
        "1 GB into /tmp": (
            "with open('/tmp/big', 'wb') as f:\n    for _ in range(1024):\n        f.write(bytes(2**20))\n"
        ),
        # reading what is not ours
        "reads /etc/shadow": "print(open('/etc/shadow').read())\n",
        "reads a 0600 file outside": f"print(open({str(w / 'private.txt')!r}).read())\n",
        "reads through a symlink": (
            f"import os\nos.symlink({str(w / 'private.txt')!r}, 'link')\nprint(open('link').read())\n"
        ),
        "reads the parent's environment": "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n",
        "scans every environment": (
            "import os\nfound = ''\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n    try:\n"
            "        found += open(f'/proc/{pid}/environ').read()\n    except OSError:\n        pass\n"
            "print(found)\nnames = {v.split('=')[0] for v in found.split('\\0') if v}\n"
            "assert names - {'HOME', 'TMPDIR', 'PATH', 'LANG'}\n"
        ),
        "reads its own environment": "import os\nprint(os.environ['HF_TOKEN'])\n",
        "finds files in /root or /home": (
            "import os, sys\nfound = [os.path.join(d, f) for top in ('/root', '/home') for d, _, fs in os.walk(top)"
            " for f in fs if not d.startswith(sys.base_prefix)]\nprint(found[:5])\nassert found\n"
        ),
        "lists /etc": "import os\nprint(os.listdir('/etc'))\nassert os.listdir('/etc')\n",
        "reads the project checkout": f"print(open({str(PROJECT / 'README.md')!r}).read()[:100])\n",
        "reads the host's /sys": "import os\nprint(os.listdir('/sys/class/net'))\n",
        # changing what is not ours
        "writes outside": f"open({str(w / 'outside.txt')!r}, 'w').write('pwned')\n",
        "creates outside": f"open({str(w / 'new.txt')!r}, 'w').write('pwned')\n",
        "deletes outside": f"import shutil\nshutil.rmtree({str(w / 'home')!r})\n",
        "chmod outside": f"import os\nos.chmod({str(w / 'private.txt')!r}, 0o777)\n",
        "chown outside": f"import os\nos.chown({str(w / 'outside.txt')!r}, 0, 0)\n",
        "utime outside": f"import os\nos.utime({str(w / 'outside.txt')!r}, (0, 0))\n",
        "setxattr outside": f"import os\nos.setxattr({str(w / 'outside.txt')!r}, 'user.pwned', b'1')\n",
        "rm -rf ~ and above": "import os\nassert os.system('rm -rf ~') == 0\nassert os.system('rm -rf ~/..') == 0\n",
        "writes into /usr": "open('/usr/pwned', 'w').write('x')\n",
        # reaching out
        "tcp to localhost": f"import socket\nsocket.create_connection(('127.0.0.1', {world.tcp_port}), timeout=1)\n",
        "udp to the internet": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(('8.8.8.8', 53))\n",
        "unix path socket": (
            f"import socket\nsocket.socket(socket.AF_UNIX).connect({str(w / 'agent.sock')!r})\n"
        ),
        "abstract unix socket": (
            f"import socket\nsocket.socket(socket.AF_UNIX).connect('\\0{world.abstract_name}')\n"
        ),
        # privileges
        "sethostname": "import socket\nsocket.sethostname('pwned')\n",
        "mounts a tmpfs": (
            "import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.mount(b'tmpfs', b'/scratch', b'tmpfs', 0, None) == 0\n"
        ),
        "nested user namespace": "import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) == 0\n",
        "chroot": "import os\nos.chroot('.')\n",
        "capabilities after exec": (
            "import subprocess, sys\ncaps = subprocess.run(['/bin/grep', 'CapEff', '/proc/self/status'],"
            " capture_output=True, text=True).stdout.split()[1]\nassert int(caps, 16) != 0, caps\n"
        ),
        "kills everyone": "import os, signal\nos.kill(-1, signal.SIGKILL)\nassert False, 'still here'\n",
        # gaming pass@k: each exits 0 before or instead of running its failed checks
        "sys.exit(0)": "import sys\nsys.exit(0)\nassert False\n",
        "os._exit(0)": "import os\nos._exit(0)\n",
        "raise SystemExit(0) in the checks": "def check():\n    raise SystemExit(0)\ncheck()\nassert False\n",
        "atexit os._exit after a failed assert": "import atexit, os\natexit.register(os._exit, 0)\nassert 1 + 1 == 3\n",
        "a thread exits 0": (
            "import os, threading, time\nthreading.Thread(target=lambda: os._exit(0)).start()\ntime.sleep(1)\n"
            "assert False\n"
        ),
    }


BENIGN = {
    "computes": "assert sorted([3, 1, 2]) == [1, 2, 3]\n",
    "uses the standard library": "import json, re, math, collections, hashlib, itertools, random, decimal, fractions\n",
    "writes its scratch": "import os\nopen('note.txt', 'w').write('ok')\nassert os.getcwd() == os.environ['HOME']\n",
    "threads": "from concurrent.futures import ThreadPoolExecutor\nassert list(ThreadPoolExecutor(4).map(abs, [-1])) == [1]\n",
    "runs a subprocess": (
        "import subprocess, sys\nassert subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True,"
        " text=True).stdout == '42\\n'\n"
    ),
}

RUNNER = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, sys.argv[1])
import sandbox
sources, limits = json.load(sys.stdin)
limits = sandbox.Limits(**limits)
with ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda s: sandbox.run_program(s, limits), sources))
json.dump([r.__dict__ for r in results], sys.stdout)
"""


def run_as_user(sources: list[str]) -> list[dict]:
    """Run the harness itself as an unprivileged user, with an interpreter that user can read."""
    python = next(
        (p for p in (os.path.realpath(sys.executable), "/usr/bin/python3") if sandbox._readable_by_others(p)),
        None,
    )
    assert python, "no Python interpreter readable by an unprivileged user"
    code = Path(tempfile.mkdtemp(prefix="llamafoundry-harness-"))
    try:
        shutil.copy(sandbox.__file__, code / "sandbox.py")
        for path in (code, code / "sandbox.py"):
            path.chmod(0o755)
        done = subprocess.run(
            [
                "setpriv",
                f"--reuid={USER.pw_uid}",
                f"--regid={USER.pw_gid}",
                "--clear-groups",
                python,
                "-c",
                RUNNER,
                str(code),
            ],
            input=json.dumps([sources, LIMITS.__dict__]),
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HF_TOKEN": ENV_SECRET},
            cwd="/",
            timeout=300,
        )
    finally:
        shutil.rmtree(code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_as_root(sources: list[str], monkeypatch) -> list[dict]:
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    return [r.__dict__ for r in run_programs(sources, LIMITS, workers=2)]


def escapes(world: World, programs: dict[str, str], results: list[dict], before: dict) -> list[str]:
    found = []
    for name, result in zip(programs, results, strict=True):
        output = result["stdout"] + result["stderr"]
        if result["status"] == "passed" or ENV_SECRET in output or FILE_SECRET in output:
            found.append(f"{name}: {result['status']} {output[-300:]!r}")
        if not set(result["isolation"]) >= MINIMUM_LAYERS:
            found.append(f"{name}: ran without {sorted(MINIMUM_LAYERS - set(result['isolation']))}")
    if world.snapshot() != before:
        found.append("the world outside changed")
    if world.connections():
        found.append("a connection reached a listener")
    if socket.gethostname() != HOSTNAME:
        found.append("the hostname changed")
    return found


HOSTNAME = socket.gethostname()
pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="the suite plants files for another user: run as root"
)


@pytest.mark.slow
def test_hostile_programs_escape_as_neither_root_nor_user(
    world_of_root: World, world_of_user: World, monkeypatch
):
    for who, world in (("root", world_of_root), ("user", world_of_user)):
        programs = hostile_programs(world)
        assert len(programs) >= 30
        before = world.snapshot()
        sources = list(programs.values()) + list(BENIGN.values())
        results = run_as_root(sources, monkeypatch) if who == "root" else run_as_user(sources)
        found = escapes(world, programs, results[: len(programs)], before)
        assert found == [], "\n".join([who, *found])
        assert [r["status"] for r in results[len(programs) :]] == ["passed"] * len(BENIGN), (
            who,
            results[-5:],
        )
        assert all(r["wall_s"] < LIMITS.timeout_s + 5 for r in results)
    assert leftover_processes() == []


def leftover_processes() -> list[str]:
    """Processes of any sandbox still running (none may outlive its run, forked or not)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if any(a.endswith(b"/sandbox.py") for a in args) or args[:2] == [b"/bin/sleep", b"5"]:
            found.append(cmdline.decode(errors="replace"))
    return found


def test_a_pass_is_the_checks_running_to_their_end():
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]\n").status == "passed"
    failed = run_program("assert 1 + 1 == 3\n")
    assert failed.status == "failed" and "AssertionError" in failed.stderr
    exited = run_program("import sys\nprint('bye')\nsys.exit(0)\n")
    assert (exited.status, exited.returncode, exited.stdout) == ("failed", 0, "bye\n")


def test_the_layers_in_force_are_reported_and_the_minimum_is_required():
    layers = set(run_program("pass\n").isolation)
    assert layers >= MINIMUM_LAYERS and {"private-root", "scratch-tmpfs"} <= layers
    # A machine whose kernel refuses namespaces: generated code does not run unless the caller allows it.
    without = Limits(timeout_s=3.0, kernel_layers=False)
    with pytest.raises(SandboxUnavailable, match="missing .*mountns"):
        run_programs(["pass\n"], without)
    (result,) = run_programs(["pass\n"], without, allow_unsafe=True)
    assert result.status == "passed" and "mountns" not in result.isolation
    assert {"audit-hook:files", "audit-hook:network"} <= set(result.isolation)


def test_without_namespaces_the_audit_hook_still_stops_naive_writes_and_sockets(world_of_root: World):
    without = Limits(timeout_s=3.0, kernel_layers=False)
    before = world_of_root.snapshot()
    for name in ("writes outside", "creates outside", "deletes outside", "chmod outside", "tcp to localhost"):
        result = run_program(hostile_programs(world_of_root)[name], without)
        assert result.status == "failed" and "sandbox:" in result.stderr, name
    assert world_of_root.snapshot() == before and world_of_root.connections() == 0


def test_the_scratch_is_a_private_tmpfs_that_leaves_nothing_behind():
    before = set(os.listdir(tempfile.gettempdir()))
    result = run_program(
        "import os\nopen('note.txt', 'w').write('ok')\nprint(os.getcwd(), os.listdir('/'))\n"
    )
    assert result.status == "passed" and result.stdout.startswith("/scratch ")
    assert set(os.listdir(tempfile.gettempdir())) - before == set()
    assert stat.S_ISDIR(os.stat(tempfile.gettempdir()).st_mode)
