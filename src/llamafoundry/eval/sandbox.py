"""Run untrusted generated programs (HumanEval, MBPP; Sec. 3.5) without trusting them.

Each program runs in its own Python process (`python -I -S`, this file in child mode) in a fresh scratch
directory that is its cwd, HOME and TMPDIR, with these layers, each used when the kernel allows it:

- limits (always): RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_NPROC (processes), RLIMIT_FSIZE, no core
  files; a wall-clock timer in the parent kills the whole process group;
- namespaces: a new network namespace (no interfaces up: no network) and a new PID namespace (when the
  program's first process dies, the kernel kills every process it started, even those that left the
  process group); as non-root, inside a new user namespace;
- Landlock (Linux >= 5.13): writes, deletions and renames are allowed only under the scratch directory;
- privileges: a root parent runs the program as `nobody`, so RLIMIT_NPROC applies (root is exempt),
  when nobody can read the interpreter's standard library;
- fallbacks, when a layer above is refused: a Python audit hook, installed before the program runs and
  impossible to remove from Python, refuses socket creation (no network namespace), file writes and
  deletions outside the scratch directory (no Landlock), and starting processes or loading C libraries
  (still root, so no process limit) as human-eval's `reliability_guard` does.

This stops accidents and naive hostile code, not a determined attacker (a VM or gVisor does that).

The layers used are reported with every result. The scratch directory is removed afterwards.
This file imports only the standard library: the child runs it with `-I -S`, outside the package.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

MARKER = "llamafoundry-sandbox:"
NOBODY = 65534
CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER = 0x40000000, 0x20000000, 0x10000000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on x86-64 and arm64.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE, FS_TRUNCATE = 1 << 1, 1 << 14
FS_WRITES = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make-*
FS_REFER = 1 << 13  # ABI 2: rename/link across directories


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock; CPU time is limited to the same
    memory_bytes: int = 4 * 2**30
    max_processes: int = 32
    max_file_bytes: int = 64 * 2**20
    kernel_layers: bool = True  # False: namespaces and Landlock off, the audit hook stands in (tests use it)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" (exit 0), "failed", or "timeout"
    returncode: int
    stdout: str  # the last 2,000 characters
    stderr: str
    wall_s: float
    isolation: tuple[str, ...]  # the layers that were in force


def run_program(source: str, limits: Limits = Limits()) -> SandboxResult:
    """Run `source` as a Python program in a fresh sandbox and report how it ended."""
    outputs = tempfile.mkdtemp(prefix="llamafoundry-sandbox-out-")
    scratch = tempfile.mkdtemp(prefix="llamafoundry-sandbox-")
    try:
        with open(os.path.join(scratch, "program.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if os.geteuid() == 0:  # the program runs as nobody: its scratch must be its own
            for path in (scratch, os.path.join(scratch, "program.py")):
                os.chown(path, NOBODY, NOBODY)
        return _supervise(scratch, outputs, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)


def run_programs(
    sources: Sequence[str], limits: Limits = Limits(), workers: int | None = None, desc: str | None = None
) -> list[SandboxResult]:
    """`run_program` over many sources, `workers` at a time, with a progress bar when `desc` is given."""
    from tqdm.auto import tqdm

    workers = workers or max(1, min(len(sources), os.cpu_count() or 1))
    with (
        concurrent.futures.ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(sources), desc=desc, unit="prog", leave=False, disable=desc is None) as bar,
    ):
        futures = [pool.submit(run_program, s, limits) for s in sources]
        for _future in concurrent.futures.as_completed(futures):
            bar.update(1)
        return [f.result() for f in futures]


def _supervise(scratch: str, outputs: str, limits: Limits) -> SandboxResult:
    env = {
        "HOME": scratch,
        "TMPDIR": scratch,
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    config = json.dumps(
        {
            "scratch": scratch,
            "timeout_s": limits.timeout_s,
            "memory_bytes": limits.memory_bytes,
            "max_processes": limits.max_processes,
            "max_file_bytes": limits.max_file_bytes,
            "kernel_layers": limits.kernel_layers,
        }
    )
    out_path, err_path = os.path.join(outputs, "stdout"), os.path.join(outputs, "stderr")
    start = time.monotonic()
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), config],
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # also whatever the program left running in its group
        proc.wait()
    wall = time.monotonic() - start
    stdout, stderr = _tail(out_path), _tail(err_path, 100_000)
    isolation: tuple[str, ...] = ()
    if stderr.startswith(MARKER):
        line, _, stderr = stderr.partition("\n")
        isolation = tuple(line[len(MARKER) :].split(","))
    cpu_killed = proc.returncode in (
        -signal.SIGXCPU,
        128 + signal.SIGXCPU,
        -signal.SIGKILL,
        128 + signal.SIGKILL,
    )
    status = "timeout" if timed_out or cpu_killed else ("passed" if proc.returncode == 0 else "failed")
    return SandboxResult(status, proc.returncode, stdout, stderr[-2000:], wall, isolation)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: str, limit: int = 2000) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - limit))
        return f.read().decode("utf-8", errors="replace")


# ---- the child: runs with -I -S, builds its cage, then runs program.py ---------------------------------
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(libc: ctypes.CDLL) -> list[str]:
    """New network + PID namespaces; as non-root, inside a new user namespace that maps our own ids."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET | CLONE_NEWPID | (0 if uid == 0 else CLONE_NEWUSER)
    if libc.unshare(flags) != 0:
        return []
    if uid != 0:
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    return ["netns", "pidns"] + ([] if uid == 0 else ["userns"])


def _become_pid1() -> None:
    """After unshare(CLONE_NEWPID) the next child is the namespace's init: run the program there and wait."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _set_limits(cfg: dict, processes_now: int) -> None:
    cpu = max(1, int(cfg["timeout_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["max_file_bytes"], cfg["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nproc = processes_now + cfg["max_processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(libc: ctypes.CDLL, scratch: str) -> bool:
    """Allow writes only beneath `scratch` (and to /dev/null); reading stays allowed everywhere."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return False
    handled = FS_WRITES | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled)
    ruleset = libc.syscall(
        SYS_LANDLOCK_CREATE_RULESET,
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        return False
    try:
        for path, access in ((scratch, handled), ("/dev/null", handled & (FS_WRITE_FILE | FS_TRUNCATE))):
            fd = os.open(path, os.O_PATH)
            try:
                rule = _PathBeneath(access, fd)
                if (
                    libc.syscall(
                        SYS_LANDLOCK_ADD_RULE,
                        ruleset,
                        LANDLOCK_RULE_PATH_BENEATH,
                        ctypes.byref(rule),
                        ctypes.c_uint32(0),
                    )
                    != 0
                ):
                    return False
            finally:
                os.close(fd)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        return libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def _audit_hook(scratch: str, blocked: set[str]):
    """A hook that refuses what missing kernel layers would have stopped: `blocked` holds "network",
    "files" (writes outside `scratch`, deletions) and/or "processes" (starting any, loading C libraries)."""
    scratch = os.path.realpath(scratch)
    spawn = {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "pty.spawn",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.call_function",
    }
    destroy = {
        "os.remove",
        "os.rmdir",
        "os.rename",
        "shutil.rmtree",
        "shutil.move",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.mkdir",
        "os.utime",
    }

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real == scratch or real.startswith(scratch + os.sep) or real == os.devnull

    def writes(args: tuple) -> bool:
        mode, flags = args[1] or "r", args[2] or 0
        return any(c in str(mode) for c in "wax+") or bool(
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        )

    def hook(event: str, args: tuple) -> None:
        if "network" in blocked and event.startswith("socket.") and event != "socket.getservbyname":
            raise PermissionError(f"sandbox: network access refused ({event})")
        if "processes" in blocked and event in spawn:
            raise PermissionError(f"sandbox: starting processes refused ({event})")
        if "files" not in blocked:
            return
        if event in destroy and not all(
            inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))
        ):
            raise PermissionError(f"sandbox: {event} outside the scratch directory refused")
        if event == "open" and args[0] is not None and not inside(args[0]) and writes(args):
            raise PermissionError(f"sandbox: writing {args[0]!r} outside the scratch directory refused")

    return hook


def _readable_by_others(path: str) -> bool:
    """Whether a process of another user could import from `path` (every parent searchable, it readable)."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & 0o004:
        return False
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def _child_main(config: str) -> None:
    cfg = json.loads(config)
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the harness
    layers = ["rlimits"] + (_unshare(libc) if cfg["kernel_layers"] else [])
    if "pidns" in layers:
        _become_pid1()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # and with the waiting parent
    processes = 0 if os.geteuid() == 0 or "userns" in layers else _count_processes(os.getuid())
    if cfg["kernel_layers"] and _landlock(libc, cfg["scratch"]):
        layers.append("landlock")
    # Root is exempt from RLIMIT_NPROC: run as nobody, if nobody can read the interpreter's library.
    if os.geteuid() == 0 and _readable_by_others(os.path.dirname(os.__file__)):
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        layers.append("nobody")
    _set_limits(cfg, processes)
    blocked = {name for name, layer in (("network", "netns"), ("files", "landlock")) if layer not in layers}
    if os.geteuid() == 0:
        blocked.add("processes")
    if blocked:
        sys.addaudithook(_audit_hook(cfg["scratch"], blocked))
        layers += [f"audit-hook:{name}" for name in sorted(blocked)]
    print(MARKER + ",".join(layers), file=sys.stderr, flush=True)
    sys.argv = ["program.py"]
    with open("program.py", encoding="utf-8") as f:
        code = compile(f.read(), "program.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})


def _count_processes(uid: int) -> int:
    """How many processes `uid` runs now: RLIMIT_NPROC counts them all, not only the program's."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{name}").st_uid == uid
    return count


if __name__ == "__main__":
    _child_main(sys.argv[1])
