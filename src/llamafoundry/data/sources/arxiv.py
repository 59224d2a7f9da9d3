"""ArXiv (Table 1: 2.5%): LaTeX sources, a paper per folder or per tarball (arXiv's e-print format).

Sec. 2.1: "We removed everything before the first section, as well as the bibliography. We also removed
the comments from the .tex files, and inline-expanded definitions and macros written by users." The
main file (the one with `\\documentclass`) is read with its `\\input`/`\\include` files inlined.
"""

from __future__ import annotations

import gzip
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader
from llamafoundry.data.textio import TRUNCATED_ERRORS

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".gz")
_COMMENT = re.compile(r"(?<!\\)%.*")
_COMMENT_ENV = re.compile(r"\\begin\{comment\}.*?\\end\{comment\}", re.DOTALL)
_INPUT = re.compile(r"\\(?:input|include)\s*\{([^}]+)\}")
_DEFINITION = re.compile(r"\\(?:re)?newcommand\*?|\\providecommand\*?|\\def(?=\\)")
_SECTION = re.compile(r"\\section\*?\s*[\[{]")
_BIBLIOGRAPHY = re.compile(
    r"\\begin\{thebibliography\}.*?\\end\{thebibliography\}|\\bibliography\s*\{[^}]*\}"
    r"|\\bibliographystyle\s*\{[^}]*\}|\\printbibliography(\[[^\]]*\])?",
    re.DOTALL,
)
_END_DOCUMENT = re.compile(r"\\end\{document\}")
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")
MAX_EXPANSION_PASSES = 8


def _group(text: str, i: int) -> tuple[str, int]:
    """The content of the brace group opening at text[i] == "{", and the index after it."""
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "\\":
            continue
        if c == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif c == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    raise ValueError("unbalanced braces")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n":
        i += 1
    return i


def _argument(text: str, i: int) -> tuple[str, int]:
    """A macro argument at `i`: a brace group, a control word, or one character (TeX's rule)."""
    i = _skip_space(text, i)
    if i >= len(text):
        raise ValueError("missing argument")
    if text[i] == "{":
        return _group(text, i)
    if text[i] == "\\":
        m = re.match(r"\\([A-Za-z@]+|.)", text[i:])
        return m.group(0), i + m.end()
    return text[i], i + 1


Macro = tuple[int, str, str | None]  # number of arguments, body, default of an optional first argument


def parse_macros(text: str) -> tuple[dict[str, Macro], str]:
    """User macros ({name: (number of arguments, body, optional-argument default)}) defined with
    \\newcommand, \\renewcommand, \\providecommand or \\def, and the text without their definitions."""
    macros: dict[str, Macro] = {}
    out, pos = [], 0
    for m in _DEFINITION.finditer(text):
        if m.start() < pos:
            continue
        try:
            i = _skip_space(text, m.end())
            if text[i] == "{":
                name, i = _group(text, i)
                name = name.strip()
            else:
                name_match = re.match(r"\\([A-Za-z@]+|.)", text[i:])
                name, i = name_match.group(0), i + name_match.end()
            nargs, default = 0, None
            if m.group(0) == "\\def":
                params = re.match(r"(#\d)*", text[i:]).group(0)
                nargs, i = len(params) // 2, i + len(params)
            else:
                i = _skip_space(text, i)
                count = re.match(r"\[(\d)\]", text[i:])
                if count:
                    nargs, i = int(count.group(1)), i + count.end()
                    i = _skip_space(text, i)
                    if text[i] == "[":  # a default for the first argument: LaTeX makes it optional
                        end = text.index("]", i)
                        default, i = text[i + 1 : end], end + 1
            body, i = _group(text, _skip_space(text, i))
        except (ValueError, IndexError, AttributeError):
            continue  # not a definition we can read: leave it in place
        if not name.startswith("\\"):
            continue
        macros[name] = (nargs, body, default)
        out.append(text[pos : m.start()])
        pos = i
    out.append(text[pos:])
    return macros, "".join(out)


def expand_macros(text: str, macros: dict[str, Macro]) -> str:
    """Replace each use of a user macro by its body with the arguments put in, until none is left."""
    if not macros:
        return text
    names = sorted(macros, key=len, reverse=True)
    use = re.compile("|".join(re.escape(n) + (r"(?![A-Za-z@])" if n[1:].isalpha() else "") for n in names))
    for _ in range(MAX_EXPANSION_PASSES):
        out, pos, changed = [], 0, False
        for m in use.finditer(text):
            if m.start() < pos:
                continue
            nargs, body, default = macros[m.group(0)]
            i, args = m.end(), []
            try:
                if default is not None:  # [optional] first argument, else the default
                    j = _skip_space(text, i)
                    if j < len(text) and text[j] == "[":
                        end = text.index("]", j)
                        args.append(text[j + 1 : end])
                        i = end + 1
                    else:
                        args.append(default)
                while len(args) < nargs:
                    arg, i = _argument(text, i)
                    args.append(arg)
            except (ValueError, AttributeError):
                continue
            for k, arg in enumerate(args, 1):
                body = body.replace(f"#{k}", arg)
            out.append(text[pos : m.start()])
            out.append(body)
            pos, changed = i, True
        out.append(text[pos:])
        text = "".join(out)
        if not changed:
            break
    return text


def strip_comments(text: str) -> str:
    """LaTeX without `%` comments (an escaped `\\%` stays) and `comment` environments."""
    text = _COMMENT_ENV.sub("", text)
    # A line that was only a comment goes entirely; a trailing comment leaves the line's text.
    lines = []
    for line in text.split("\n"):
        stripped = _COMMENT.sub("", line)
        if stripped.strip() or not line.strip():
            lines.append(stripped.rstrip() if stripped != line else line)
    return "\n".join(lines)


def latex_to_text(files: dict[str, str]) -> str | None:
    """The paper's cleaned LaTeX (see the module docstring) from its .tex files ({path: text}), or None
    when there is no main file or no \\section."""
    main = _main_file(files)
    if main is None:
        return None
    text = _inline(strip_comments(files[main]), files, main, depth=0)
    macros, text = parse_macros(text)
    section = _SECTION.search(text)
    if section is None:
        return None
    text = text[section.start() :]
    end = _END_DOCUMENT.search(text)
    if end:
        text = text[: end.start()]
    text = _BIBLIOGRAPHY.sub("", text)
    text = expand_macros(text, macros)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _main_file(files: dict[str, str]) -> str | None:
    candidates = [p for p, t in files.items() if "\\documentclass" in t]
    if not candidates:
        return None
    # Several: the one with the document body, then the longest.
    return max(candidates, key=lambda p: ("\\begin{document}" in files[p], len(files[p])))


def _inline(text: str, files: dict[str, str], current: str, depth: int) -> str:
    if depth > 8:
        return text
    folder = current.rsplit("/", 1)[0] + "/" if "/" in current else ""

    def replace(m: re.Match) -> str:
        name = m.group(1).strip()
        for candidate in (name, name + ".tex", folder + name, folder + name + ".tex"):
            if candidate in files:
                return _inline(strip_comments(files[candidate]), files, candidate, depth + 1)
        return ""  # a file the source does not ship (e.g. a generated table): nothing to inline

    return _INPUT.sub(replace, text)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # older arXiv sources are Latin-1


class ArxivReader(Reader):
    """One document per paper. The input is a paper (a folder with .tex files, or a tarball) or a folder of
    papers (sub-folders and tarballs). The id is `arxiv:<paper name>`."""

    source = "arxiv"

    def documents(self, path: Path) -> Iterator[Document]:
        if path.is_dir() and not any(p.suffix == ".tex" for p in path.iterdir()):
            papers = sorted(p for p in path.iterdir() if p.is_dir() or p.name.endswith(TARBALL_SUFFIXES))
        else:
            papers = [path]
        for paper in papers:
            doc = self._paper(paper)
            if doc is not None:
                yield doc

    def _paper(self, paper: Path) -> Document | None:
        name = paper.name
        for suffix in TARBALL_SUFFIXES:
            if paper.is_file() and name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        try:
            files = self._tex_files(paper)
        except (tarfile.TarError, *TRUNCATED_ERRORS) as exc:
            self.skip("truncated or corrupt archive", f"{paper}: {exc}")
            return None
        text = latex_to_text(files)
        if text is None:
            self.skip("no main .tex file or no \\section", str(paper))
            return None
        return Document(f"arxiv:{name}", text, self.source, {"paper": name, "files": sorted(files)})

    def _tex_files(self, paper: Path) -> dict[str, str]:
        if paper.is_dir():
            return {
                p.relative_to(paper).as_posix(): _decode(p.read_bytes())
                for p in sorted(paper.rglob("*.tex"))
                if p.is_file()
            }
        try:
            with tarfile.open(paper, "r:*") as tar:
                # Read members in memory: nothing from an untrusted archive is written to disk.
                return {
                    m.name.lstrip("./"): _decode(tar.extractfile(m).read())
                    for m in tar.getmembers()
                    if m.isfile() and m.name.endswith(".tex")
                }
        except tarfile.ReadError:
            if paper.suffix != ".gz":
                raise
        with gzip.open(paper, "rb") as single:  # arXiv serves one-file submissions as gzipped .tex
            return {paper.name[:-3] + ".tex": _decode(single.read())}
