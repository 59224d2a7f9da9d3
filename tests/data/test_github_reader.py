"""The GitHub reader (files, languages, licenses from LICENSE/COPYING files) and the license filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamafoundry.data.filters.license import LicenseFilter
from llamafoundry.data.sources.github import GitHubReader

MIT = """MIT License

Copyright (c) 2021 Ada Lovelace

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
# Debian's base-files ships the full GPL and Apache texts on every Debian/Ubuntu system.
COMMON_LICENSES = Path("/usr/share/common-licenses")


def _license_text(name: str) -> str:
    path = COMMON_LICENSES / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: install Debian's base-files (it ships the license texts)")
    return path.read_text()


@pytest.fixture
def repos(tmp_path) -> Path:
    root = tmp_path / "repos"
    files = {
        "mit-repo/LICENSE": MIT,
        "mit-repo/src/app.py": "def main():\n    return 42\n",
        "mit-repo/README.md": "# App\n\nIt returns 42.\n",
        "mit-repo/src/firmware.h": None,  # binary
        "mit-repo/src/legacy.c": None,  # Latin-1 text
        "gpl-repo/COPYING": _license_text("GPL-3"),
        "gpl-repo/main.c": "int main(void) { return 0; }\n",
        "dual/LICENSE-MIT": MIT,
        "dual/LICENSE-APACHE": _license_text("Apache-2.0"),
        "dual/lib.rs": "pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
        "loose/script.sh": "echo hello\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("firmware.h"):
            path.write_bytes(b"\x7fELF\x02\x01\x01\0\0\0\0\0" + bytes(range(256)))
        elif rel.endswith("legacy.c"):
            path.write_bytes("/* caf\xe9 */\nint x;\n".encode("latin-1"))
        else:
            path.write_text(text)
    return root


def test_files_languages_and_licenses(repos):
    reader = GitHubReader()
    docs = {d.meta["path"]: d for d in reader.read(repos)}
    assert sorted(docs) == [
        "dual/lib.rs",
        "gpl-repo/main.c",
        "loose/script.sh",
        "mit-repo/README.md",
        "mit-repo/src/app.py",
    ]
    app = docs["mit-repo/src/app.py"]
    assert app.id == "github:repos/mit-repo/src/app.py"
    assert app.text == "def main():\n    return 42\n"
    assert app.meta == {
        "repo": "mit-repo",
        "path": "mit-repo/src/app.py",
        "language": "Python",
        "license": "MIT",
    }
    assert docs["mit-repo/README.md"].meta["language"] == "Markdown"
    assert docs["gpl-repo/main.c"].meta["license"] == "GPL-3.0-only"
    assert docs["gpl-repo/main.c"].meta["language"] == "C"
    assert docs["dual/lib.rs"].meta["license"] == "Apache-2.0 OR MIT"
    assert docs["loose/script.sh"].meta["license"] == "unknown"
    assert reader.stats.dropped == {"binary file": 1, "invalid UTF-8": 1}
    assert reader.stats.examples["binary file"] == "mit-repo/src/firmware.h"


def test_license_filter_keeps_mit_and_drops_gpl(repos):
    stage = LicenseFilter()
    kept = [d.meta["path"] for d in stage(GitHubReader().read(repos))]
    assert kept == ["dual/lib.rs", "mit-repo/README.md", "mit-repo/src/app.py"]
    assert stage.stats.dropped == {"license GPL-3.0-only": 1, "license unknown": 1}


def test_exclude_patterns_and_extensions(repos):
    reader = GitHubReader(extensions=[".py", ".rs"], exclude=["dual/*"])
    assert [d.meta["path"] for d in reader.read(repos)] == ["mit-repo/src/app.py"]
