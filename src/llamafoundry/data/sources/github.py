"""GitHub (Table 1: 4.5%): every source file of a repository checkout, or of a folder of checkouts, with
its path, programming language and the license of the repository it belongs to.

A file's repository is the nearest folder above it (up to the given root) that holds a LICENSE or
COPYING file; the license is identified from that file's text (`data/licenses.py`). The license filter
stage then keeps the permissive ones.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.licenses import UNKNOWN, identify_license, is_license_file
from llamafoundry.data.sources.base import Reader

# File extension -> language (the languages of the paper's GitHub BigQuery export, and their kin).
LANGUAGES = {
    ".py": "Python",
    ".pyi": "Python",
    ".c": "C",
    ".h": "C",
    ".cc": "C++",
    ".cpp": "C++",
    ".cxx": "C++",
    ".hpp": "C++",
    ".hh": "C++",
    ".cu": "CUDA",
    ".java": "Java",
    ".kt": "Kotlin",
    ".scala": "Scala",
    ".js": "JavaScript",
    ".mjs": "JavaScript",
    ".jsx": "JavaScript",
    ".ts": "TypeScript",
    ".tsx": "TypeScript",
    ".go": "Go",
    ".rs": "Rust",
    ".rb": "Ruby",
    ".php": "PHP",
    ".cs": "C#",
    ".swift": "Swift",
    ".m": "Objective-C",
    ".r": "R",
    ".jl": "Julia",
    ".lua": "Lua",
    ".pl": "Perl",
    ".sh": "Shell",
    ".bash": "Shell",
    ".sql": "SQL",
    ".hs": "Haskell",
    ".ml": "OCaml",
    ".ex": "Elixir",
    ".erl": "Erlang",
    ".clj": "Clojure",
    ".dart": "Dart",
    ".f90": "Fortran",
    ".vim": "Vim script",
    ".tex": "TeX",
    ".md": "Markdown",
    ".rst": "reStructuredText",
    ".html": "HTML",
    ".css": "CSS",
    ".yaml": "YAML",
    ".yml": "YAML",
    ".toml": "TOML",
    ".json": "JSON",
}
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".tox", ".venv"}
BINARY_PROBE = 8192  # a NUL byte in the first 8 KiB means binary, as git decides


class GitHubReader(Reader):
    """One document per source file under the given folder, in sorted path order.

    `exclude` holds glob patterns matched against the path relative to the folder (`*` also crosses
    `/`), e.g. `["site-packages/*", "*/tests/*"]`; `extensions` limits the files read (default: those of
    `LANGUAGES`); larger files than `max_bytes` are skipped (generated or data files).
    """

    source = "github"

    def __init__(
        self,
        extensions: list[str] | None = None,
        exclude: list[str] | None = None,
        max_bytes: int = 1_000_000,
        source: str | None = None,
    ) -> None:
        super().__init__(source)
        self.extensions = {e.lower() for e in extensions} if extensions else set(LANGUAGES)
        self.exclude = list(exclude or [])
        self.max_bytes = max_bytes

    def documents(self, path: Path) -> Iterator[Document]:
        root = path
        licenses: dict[Path, tuple[str, str] | None] = {}
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not self._excluded_dir(root, here / d))
            for name in sorted(files):
                file = here / name
                rel = file.relative_to(root).as_posix()
                if self._excluded(rel):
                    continue
                suffix = file.suffix.lower()
                if suffix not in self.extensions:
                    continue
                doc = self._document(root, file, rel, LANGUAGES.get(suffix, suffix.lstrip(".")), licenses)
                if doc is not None:
                    yield doc

    def _excluded(self, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.exclude)

    def _excluded_dir(self, root: Path, folder: Path) -> bool:
        # A folder is skipped whole when every file in it would be excluded: probe with a name no
        # pattern names.
        return self._excluded(folder.relative_to(root).as_posix() + "/\0")

    def _document(
        self, root: Path, file: Path, rel: str, language: str, licenses: dict[Path, tuple[str, str] | None]
    ) -> Document | None:
        try:
            if file.is_symlink() or file.stat().st_size > self.max_bytes:
                self.skip("symlink or file too large", rel)
                return None
            data = file.read_bytes()
        except OSError as exc:
            self.skip("unreadable file", f"{rel}: {exc.strerror}")
            return None
        if b"\0" in data[:BINARY_PROBE]:
            self.skip("binary file", rel)
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.skip("invalid UTF-8", rel)
            return None
        repo, license_id = self._license(root, file.parent, licenses) or (root.name, UNKNOWN)
        meta = {"repo": repo, "path": rel, "language": language, "license": license_id}
        return Document(f"github:{root.name}/{rel}", text, self.source, meta)

    def _license(
        self, root: Path, folder: Path, cache: dict[Path, tuple[str, str] | None]
    ) -> tuple[str, str] | None:
        """(repository name, SPDX expression) from the nearest LICENSE/COPYING file at or above `folder`."""
        if folder in cache:
            return cache[folder]
        found = None
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and is_license_file(p.name))
        if names:
            ids = sorted({identify_license((folder / n).read_text("utf-8", "replace")) for n in names})
            known = [i for i in ids if i != UNKNOWN] or [UNKNOWN]
            # Several license files (LICENSE-MIT + LICENSE-APACHE) mean a choice of licenses.
            repo = root.name if folder == root else folder.relative_to(root).as_posix()
            found = (repo, " OR ".join(known))
        elif folder != root:
            found = self._license(root, folder.parent, cache)
        cache[folder] = found
        return found
