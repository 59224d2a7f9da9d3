"""Files in and out: TOML recipes read with one-line errors; writes that a crash never leaves half done
(write beside the target, then rename); outputs that never replace what we did not write.

Every output folder we write holds a marker (OUTPUT_MARKER) naming what wrote it and, for an output written
whole, everything in it. `check_output` lets a command replace only an empty folder or, with --overwrite, a
folder whose marker vouches for everything in it: provenance, which no file set of our formats gives (our
Hugging Face export and a model downloaded from the Hub hold the same names), and nothing added since.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llamafoundry import __version__
from llamafoundry.errors import UserError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file's object; an unreadable file or one holding no object is a UserError naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); fix or re-export the file") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} should hold a JSON object, found {type(value).__name__}")
    return value


def read_toml(path: str | os.PathLike, what: str = "file") -> dict:
    """A TOML file's tables; a missing or malformed file is a UserError naming it (`what`: "recipe"...)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{what} {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML ({exc})") from None


def _beside(path: Path, suffix: str, make: Callable[[Path], None]) -> Path:
    """A new file or folder, made by `make`, under a fresh hidden name beside `path`.

    Not mkstemp/mkdtemp: they make owner-only files, and a file renamed into place keeps its mode. `make`
    creates with 0o666 / 0o777 and the kernel applies the process's umask of the moment.
    """
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            make(candidate)
            return candidate
        except FileExistsError:
            continue


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _new_dir(path: Path) -> None:
    os.mkdir(path, 0o777)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, ".tmp", _new_file)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


OUTPUT_MARKER = ".llamafoundry-output.json"

# How a writer recognises its own output that has no marker: a file (a format has no room for one) or a
# folder written before markers existed. It must say no to anything holding a file it would not write.
Recognise = Callable[[Path], bool]


def check_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    folder: bool = True,
    recognise: Recognise | None = None,
) -> None:
    """A UserError, with nothing touched, unless an output may be written at `path`: nothing is there, an
    empty folder is, or (with `overwrite`) an earlier output of ours of the same shape (folder or file).

    A folder is ours when its marker lists everything in it, or `recognise` says so; a file when
    `recognise` says so.
    """
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; choose another output path (a link is never replaced)")
    if not path.exists() or (folder and path.is_dir() and not any(path.iterdir())):
        return
    if path.is_dir() != folder:
        have, want = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise UserError(f"{path} is {have} and this output is {want}; choose another output path")
    if folder:
        problem = _not_ours(path, recognise)
    else:
        problem = None if recognise is not None and recognise(path) else "is not a file this command writes"
    if problem:
        raise UserError(
            f"{path} {problem}; choose another output path (--overwrite replaces only an output of ours)"
        )
    if not overwrite:
        raise UserError(
            f"{path} already exists; pass --overwrite to replace it, or choose another output path"
        )


def _not_ours(folder: Path, recognise: Recognise | None) -> str | None:
    """What keeps `folder` from being an output of ours that may be replaced, or None."""
    marker = read_marker(folder)
    if marker is not None and isinstance(marker.get("contents"), list):
        strangers = _beyond(folder, {OUTPUT_MARKER, *marker["contents"]})
        return f"holds {_names(strangers)}, which llamafoundry did not write" if strangers else None
    if marker is not None:  # a run folder grows file by file: no list vouches for all of it
        return f"is a llamafoundry {marker.get('kind', 'run')} folder, which is never replaced"
    if recognise is not None and recognise(folder):
        return None
    return f"holds {_names(sorted(p.name for p in folder.iterdir()))}, which llamafoundry did not write"


def holds_only(folder: str | os.PathLike, files: set[str]) -> bool:
    """Whether everything in `folder` is one of `files` (relative POSIX paths) or a folder on their way."""
    return not _beyond(Path(folder), files)


def _beyond(folder: Path, contents: set[str]) -> list[str]:
    contents = {c for c in contents if isinstance(c, str)}  # a damaged marker vouches for names only
    allowed = contents | {parent.as_posix() for c in contents for parent in Path(c).parents}
    found = []
    for root, dirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / name).as_posix() for name in dirs + names]
    return sorted(set(found) - allowed)


def _names(paths: list[str], most: int = 3) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker an output folder of ours holds, or None (no marker, or one we cannot read)."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _marker(kind: str, contents: list[str] | None = None) -> dict:
    marker: dict[str, Any] = {"written_by": f"llamafoundry {__version__}", "kind": kind}
    if contents is not None:
        marker["contents"] = contents
    return marker


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike,
    *,
    kind: str = "output",
    overwrite: bool = False,
    recognise: Recognise | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, on error it is removed.

    `path` must pass `check_output` (before the work, and again before the swap); the new folder gets a
    marker listing what it holds (`kind` says what it is). A previous folder at `path` is kept until the new
    one is complete.
    """
    path = Path(path)
    check_output(path, overwrite=overwrite, recognise=recognise)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, ".tmp", _new_dir)
    try:
        yield tmp
        # safetensors writes owner-only files; ours get the mode the umask gave the folder, less execute.
        file_mode = tmp.stat().st_mode & 0o666
        for file in tmp.rglob("*"):
            if file.is_file() and not file.is_symlink() and file.stat().st_mode & 0o777 == 0o600:
                file.chmod(file_mode)
        contents = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*"))
        write_json(tmp / OUTPUT_MARKER, _marker(kind, contents))
        check_output(path, overwrite=overwrite, recognise=recognise)  # what appeared while we wrote
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def output_file(
    path: str | os.PathLike, *, overwrite: bool = False, recognise: Recognise | None = None
) -> Iterator[Path]:
    """`atomic_path` for a command's output file: `check_output` before the work and again before the
    rename, so the file replaced (with `overwrite`) is only one that `recognise` calls ours."""
    check_output(path, overwrite=overwrite, folder=False, recognise=recognise)
    with atomic_path(path) as tmp:
        yield tmp
        check_output(path, overwrite=overwrite, folder=False, recognise=recognise)


def check_run_dir(path: str | os.PathLike, kind: str, recognise: Recognise | None = None) -> None:
    """A UserError unless `path` can be a run folder of `kind` (a training run, a data run): a folder a
    command adds to and resumes in. Nothing there, a folder holding no file (empty folders only: a mount
    point prepared for checkpoints, say), or a `kind` run of ours (its marker, or `recognise` for a run
    from before markers) will do; files in it that we did not write stay."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file and a {kind} writes a folder; choose another output path")
    if not path.exists() or all(p.is_dir() and not p.is_symlink() for p in path.rglob("*")):
        return
    marker = read_marker(path)
    if marker is None and recognise is not None and recognise(path):
        return
    if marker is None:
        raise UserError(
            f"{path} holds {_names(sorted(p.name for p in path.iterdir()))}, which llamafoundry did not "
            f"write; give the {kind} a new or empty folder"
        )
    if marker.get("kind") != kind:
        raise UserError(
            f"{path} holds a llamafoundry {marker.get('kind')}, not a {kind}; give the {kind} a new or "
            "empty folder"
        )


def claim_run_dir(path: str | os.PathLike, kind: str, recognise: Recognise | None = None) -> Path:
    """`check_run_dir`, then create the folder with its marker (if it has none yet); the folder."""
    path = Path(path)
    check_run_dir(path, kind, recognise)
    path.mkdir(parents=True, exist_ok=True)
    if read_marker(path) is None:
        # Staged beside the folder, not in it: a process checking the folder meanwhile (another rank)
        # sees it empty or marked, never holding a stranger.
        tmp = _beside(path, ".tmp", _new_file)
        tmp.write_text(json.dumps(_marker(kind), indent=2), encoding="utf-8")
        os.replace(tmp, path / OUTPUT_MARKER)
    return path
