"""Run untrusted generated programs (HumanEval, MBPP; Sec. 3.5) without trusting them.

Each program runs in its own Python process (`python -I -S`, this file in child mode) that builds its
cage before the program's first line, in this order:

- identity: a new user namespace in which the program is root but the kernel sees an unprivileged
  user: `nobody` when the harness runs as root, the harness's own user otherwise. Supplementary groups
  are dropped; every capability (bounding set included) is dropped before the program runs;
  no-new-privileges is set;
- namespaces: a new mount namespace whose root is a read-only tmpfs holding only the interpreter's
  prefix and /usr (read-only bind mounts), /dev/{null,zero,full,random,urandom}, a /proc of the new PID
  namespace (it shows only the program's processes: no other environment is readable), and /scratch, a
  size-limited tmpfs that is the program's cwd, HOME and TMPDIR; the host's root, /etc, /home, /root,
  /tmp and every path socket are out of reach. New network (no interface up), PID (the kernel kills
  everything the program started when it ends), UTS and IPC namespaces. Nested user namespaces are
  refused;
- limits: RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_NPROC (counted in the new user namespace, so only the
  program's own processes count), RLIMIT_FSIZE, no core files; a wall-clock timer in the harness
  kills the whole process group;
- extra layers, each used when the kernel allows it: Landlock (writes only beneath /scratch) and a
  Python audit hook (no sockets, no writes outside /scratch; no new processes when no process limit is
  in force). Neither is the wall: both stand behind the namespaces.

The environment is empty but for HOME, TMPDIR, PATH and LANG. The program source and a secret token
reach the child on its stdin, never on its command line. A program passes only when the harness reads
that token from a pipe after the program's last line ran: exiting early with status 0 (`sys.exit(0)`,
`os._exit(0)`, an `atexit` hook) is a failure.

When the kernel refuses a layer of `MINIMUM_LAYERS` (e.g. a container that forbids namespaces),
`run_programs` refuses to run code unless the caller allows it (the CLI's `--unsafe-no-sandbox`), and
then the audit hook stands in as well as it can. Every result reports the layers that were in force.
This file imports only the standard library: the child runs it with `-I -S`, outside the package.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import platform
import resource
import secrets
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
# The layers without which generated code does not run (unless the caller allows it).
MINIMUM_LAYERS = frozenset(
    {"mountns", "netns", "pidns", "private-root", "unprivileged", "no-capabilities", "rlimits"}
)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MS_LOCKED = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # + noatime, nodiratime, relatime
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 28, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECURE_NOROOT_AND_LOCKS = 0b1111  # SECBIT_NOROOT, _LOCKED, SECBIT_NO_SETUID_FIXUP, _LOCKED
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on x86-64 and arm64.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE, FS_TRUNCATE = 1 << 1, 1 << 14
FS_WRITES = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make-*
FS_REFER = 1 << 13  # ABI 2: rename/link across directories
SCRATCH = "/scratch"
SPACES = ["mountns", "netns", "pidns", "utsns", "ipcns"]
DEVICES = ("null", "zero", "full", "random", "urandom")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock; CPU time is limited to the same
    memory_bytes: int = 4 * 2**30
    max_processes: int = 32
    max_file_bytes: int = 64 * 2**20
    scratch_bytes: int = 64 * 2**20  # the size of the program's tmpfs scratch
    kernel_layers: bool = True  # False: namespaces off, as where the kernel refuses them (tests use it)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" (the program's last line ran), "failed", or "timeout"
    returncode: int
    stdout: str  # the last 2,000 characters
    stderr: str
    wall_s: float
    isolation: tuple[str, ...]  # the layers that were in force


class SandboxUnavailable(RuntimeError):
    """The kernel refused a layer of `MINIMUM_LAYERS`: running generated code here would not be safe."""


def run_program(source: str, limits: Limits = Limits()) -> SandboxResult:
    """Run `source` as a Python program in a fresh sandbox and report how it ended."""
    root = tempfile.mkdtemp(prefix="llamafoundry-sandbox-")  # an empty mount point, nothing more
    try:
        return _supervise(source, root, limits)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_programs(
    sources: Sequence[str],
    limits: Limits = Limits(),
    workers: int | None = None,
    desc: str | None = None,
    allow_unsafe: bool = False,
) -> list[SandboxResult]:
    """`run_program` over many sources, `workers` at a time, with a progress bar when `desc` is given.

    Raises `SandboxUnavailable` before running any source when a layer of `MINIMUM_LAYERS` is missing,
    unless `allow_unsafe`.
    """
    from tqdm.auto import tqdm

    if not allow_unsafe:
        require_minimum_layers(limits)
    workers = workers or max(1, min(len(sources), os.cpu_count() or 1))
    with (
        concurrent.futures.ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(sources), desc=desc, unit="prog", leave=False, disable=desc is None) as bar,
    ):
        futures = [pool.submit(run_program, s, limits) for s in sources]
        for _future in concurrent.futures.as_completed(futures):
            bar.update(1)
        return [f.result() for f in futures]


def require_minimum_layers(limits: Limits = Limits()) -> tuple[str, ...]:
    """The layers a probe program gets here; `SandboxUnavailable` names those of `MINIMUM_LAYERS` missing."""
    probe = run_program("pass\n", limits)
    missing = sorted(MINIMUM_LAYERS - set(probe.isolation))
    if probe.status != "passed" or missing:
        detail = f"missing {', '.join(missing)}" if missing else f"a probe program {probe.status}"
        raise SandboxUnavailable(
            f"the code sandbox cannot isolate generated programs here ({detail}; {probe.stderr.strip()[-300:]})"
        )
    return probe.isolation


def _supervise(source: str, root: str, limits: Limits) -> SandboxResult:
    env = {"HOME": SCRATCH, "TMPDIR": SCRATCH, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    token = secrets.token_hex(16)
    config = {"root": root, "source": source, "token": token, **limits.__dict__}
    done_read, done_write = os.pipe()
    start = time.monotonic()
    timed_out = False
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(done_write)],
                cwd=root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(done_write,),
                start_new_session=True,
            )
        finally:
            os.close(done_write)
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(config).encode())
                proc.stdin.close()
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # also whatever the program left running in its group
        proc.wait()
        wall = time.monotonic() - start
        finished = _read_pipe(done_read) == token.encode()
        stdout, stderr = _tail(out), _tail(err, 100_000)
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
    status = "passed" if finished else ("timeout" if timed_out or cpu_killed else "failed")
    return SandboxResult(status, proc.returncode, stdout, stderr[-2000:], wall, isolation)


def _read_pipe(fd: int) -> bytes:
    """What the child wrote to the pipe's other end (now closed by every process that held it)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 256)
    except BlockingIOError:
        return b""  # a grandchild still holds the write end: the program did not finish
    finally:
        os.close(fd)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(f, limit: int = 2000) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


# ---- the child: runs with -I -S, builds its cage, then runs the program ---------------------------------
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str = ""
) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data) if data else None),
        f"mount {target}",
    )


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _enter_namespaces(libc: ctypes.CDLL) -> list[str]:
    """New mount, network, PID, UTS and IPC namespaces (the PID one takes effect for our next child).

    A root harness creates them as root, so that it can still bind the interpreter from wherever it is
    installed (/root/.pyenv...); an unprivileged one first needs a user namespace mapping its own ids.
    """
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return SPACES if libc.unshare(flags) == 0 else []
    if libc.unshare(CLONE_NEWUSER | flags) != 0:
        return []
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        _write(f"/proc/self/{name}", text)
    return ["userns", "unprivileged", *SPACES]


def _map_root_to_nobody(libc: ctypes.CDLL) -> list[str]:
    """A root harness, its cage built: a new user namespace in which we stay root but the kernel sees
    nobody, so RLIMIT_NPROC counts only this program's processes. Only a process outside the namespace
    may map root to nobody: a helper forked before `unshare` writes the maps (we are PID 1 here)."""
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(ready_w)
        os.close(mapped_r)
        try:
            if os.read(ready_r, 1) == b"1":
                _write("/proc/1/uid_map", f"0 {NOBODY} 1")
                _write("/proc/1/gid_map", f"0 {NOBODY} 1")
                os.write(mapped_w, b"1")
        finally:
            os._exit(0)
    os.close(ready_r)
    os.close(mapped_w)
    entered = libc.unshare(CLONE_NEWUSER) == 0
    os.write(ready_w, b"1" if entered else b"0")
    os.close(ready_w)
    mapped = os.read(mapped_r, 1) == b"1"
    os.close(mapped_r)
    os.waitpid(helper, 0)
    if not mapped:
        return []
    os.setresgid(0, 0, 0)
    os.setgroups([])  # root's supplementary groups (root among them) would open group-readable files
    os.setresuid(0, 0, 0)
    return ["userns", "unprivileged"]


def _become_nobody(libc: ctypes.CDLL) -> list[str]:
    """Without a user namespace: plain nobody (the kernel then clears our capabilities itself)."""
    _drop_bounding_set(libc)
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    return ["unprivileged"]


def _become_pid1() -> None:
    """After unshare(CLONE_NEWPID) the next child is the namespace's init: run the program there and wait."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _visible_paths() -> list[str]:
    """What the program may read: /usr and the interpreter's installation, as few folders as cover them."""
    wanted = [
        "/usr",
        sys.base_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    ]
    folders: list[str] = []
    for path in sorted({os.path.realpath(p) for p in wanted if p}, key=len):
        if os.path.isdir(path) and not any(path == f or path.startswith(f + os.sep) for f in folders):
            folders.append(path)
    return folders


def _bind_read_only(libc: ctypes.CDLL, source: str, target: str) -> None:
    try:
        _mount(libc, source, target, None, MS_BIND)
    except OSError:  # mounts below `source` that we may not reveal unless they come along
        _mount(libc, source, target, None, MS_BIND | MS_REC)
    # A remount inside a user namespace must keep the flags the host locked (nosuid, nodev...).
    kept = os.statvfs(source).f_flag & MS_LOCKED
    _mount(libc, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def _build_root(libc: ctypes.CDLL, root: str, scratch_bytes: int, owner: int) -> list[str]:
    """Make `root` a tmpfs showing only what the program needs, pivot into it and drop the host's root."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for folder in _visible_paths():
        os.makedirs(root + folder, exist_ok=True)
        _bind_read_only(libc, folder, root + folder)
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # merged /usr: links into it
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), root + host)
        elif os.path.isdir(host) and not os.path.exists(root + host):
            os.makedirs(root + host)
            _bind_read_only(libc, host, root + host)
    os.makedirs(root + "/dev")
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        _mount(libc, f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
    os.makedirs(root + SCRATCH)
    _mount(
        libc,
        "tmpfs",
        root + SCRATCH,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"size={scratch_bytes},mode=700,uid={owner},gid={owner}",
    )
    os.symlink(SCRATCH, root + "/tmp")
    os.makedirs(root + "/etc")
    os.makedirs(root + "/proc")
    layers = ["private-root", "scratch-tmpfs"]
    try:  # a /proc of our own PID namespace: only the program's processes, no host environment
        _mount(libc, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.symlink("/proc/self/fd", root + "/dev/fd")
        layers.append("own-proc")
    except OSError:
        pass  # no /proc at all is stricter still
    os.chdir(root)
    if platform.machine() not in SYS_PIVOT_ROOT:
        raise OSError(f"pivot_root: no syscall number known for {platform.machine()}")
    _check(libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    _mount(libc, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return layers


def _forbid_nested_namespaces() -> bool:
    """Nested user namespaces would hand the program capabilities (and tmpfs mounts outside its quota)."""
    try:
        _write("/proc/sys/user/max_user_namespaces", "0")
        return True
    except OSError:
        return False


def _drop_bounding_set(libc: ctypes.CDLL) -> None:
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1


def _drop_capabilities(libc: ctypes.CDLL) -> bool:
    """Keep no capability, now or after an exec (root inside a user namespace would regain them)."""
    _drop_bounding_set(libc)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    libc.prctl(PR_SET_SECUREBITS, SECURE_NOROOT_AND_LOCKS, 0, 0, 0)  # refused, and moot, once nobody
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all empty
    cleared = libc.capset(header, data) == 0
    return libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 and cleared


def _set_limits(cfg: dict) -> None:
    cpu = max(1, int(cfg["timeout_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["max_file_bytes"], cfg["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Counted per user in the user namespace: the program's own processes (this one included).
    resource.setrlimit(resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"]))


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
                added = libc.syscall(
                    SYS_LANDLOCK_ADD_RULE,
                    ruleset,
                    LANDLOCK_RULE_PATH_BENEATH,
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
                if added != 0:
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
        "os.setxattr",
        "os.removexattr",
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


def _cage(cfg: dict, libc: ctypes.CDLL) -> list[str]:
    """Build every layer the kernel allows, leave us in the program's scratch folder, and name the layers."""
    layers = ["rlimits"] + (_enter_namespaces(libc) if cfg["kernel_layers"] else [])
    if "pidns" in layers:
        _become_pid1()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the waiting parent
    sys.executable = os.path.realpath(sys.executable)  # a venv's link would point outside the new root
    root_harness = os.getuid() == 0 and "userns" not in layers
    scratch = cfg["root"]
    if "mountns" in layers:
        layers += _build_root(libc, cfg["root"], cfg["scratch_bytes"], owner=NOBODY if root_harness else 0)
        scratch = SCRATCH
        if root_harness:
            layers += _map_root_to_nobody(libc) if "own-proc" in layers else []
            layers += [] if "userns" in layers else _become_nobody(libc)
        if "userns" in layers and _forbid_nested_namespaces():
            layers.append("no-nested-userns")
    elif root_harness and _readable_by_others(os.path.dirname(os.__file__)):
        os.chown(scratch, NOBODY, NOBODY)  # root is exempt from RLIMIT_NPROC: run as nobody instead
        layers += _become_nobody(libc)
    if cfg["kernel_layers"] and _drop_capabilities(libc):
        layers.append("no-capabilities")
    os.environ.update(HOME=scratch, TMPDIR=scratch)
    os.chdir(scratch)
    with open("program.py", "w", encoding="utf-8") as f:
        f.write(cfg["source"])
    if cfg["kernel_layers"] and _landlock(libc, scratch):
        layers.append("landlock")
    _set_limits(cfg)
    blocked = {"network", "files"} | (
        {"processes"} if os.geteuid() == 0 and "userns" not in layers else set()
    )
    sys.addaudithook(_audit_hook(scratch, blocked))  # behind the namespaces, or in their place
    layers += [f"audit-hook:{name}" for name in sorted(blocked)]
    return layers


def _child_main(done_fd: int) -> None:
    cfg = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the harness
    layers = _cage(cfg, libc)
    print(MARKER + ",".join(layers), file=sys.stderr, flush=True)
    token = cfg.pop("token").encode()
    code = compile(cfg.pop("source"), "program.py", "exec")
    sys.argv = ["program.py"]
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    # Reached only when the program's last line ran: exits, even with status 0, never get here.
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(done_fd, token)
    os._exit(0)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
