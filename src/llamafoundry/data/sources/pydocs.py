"""Python's own documentation as prose, from any Python installation: the reference topics behind
`help()` (`pydoc_data/topics.py`) and the docstring of every standard-library module.

The quickstart's small corpus pairs this with the standard library's source files (the GitHub reader), so
a corpus can be built on any machine without downloading anything.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import tokenize
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.data.document import Document
from llamafoundry.data.sources.base import Reader

TOPICS_FILE = "pydoc_data/topics.py"
_SKIP_TOKENS = {tokenize.ENCODING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE}


def read_topics(stdlib: Path) -> dict[str, str]:
    """The `topics` dict of pydoc_data/topics.py, read as a literal (the module is not imported)."""
    tree = ast.parse((stdlib / TOPICS_FILE).read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def module_docstring(source: bytes) -> str | None:
    """The module docstring of Python source, from its first tokens (no full parse, no import)."""
    try:
        for token in tokenize.tokenize(io.BytesIO(source).readline):
            if token.type in _SKIP_TOKENS:
                continue
            if token.type == tokenize.STRING:
                value = ast.literal_eval(token.string)
                return value if isinstance(value, str) else None
            return None
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    return None


class PythonDocsReader(Reader):
    """The input is a standard-library folder (`{stdlib}` in a recipe). One document per help topic and
    one per module docstring of at least `min_chars` characters; `exclude` globs as the GitHub reader's."""

    source = "pydocs"

    def __init__(
        self, min_chars: int = 200, exclude: list[str] | None = None, source: str | None = None
    ) -> None:
        super().__init__(source)
        self.min_chars = min_chars
        self.exclude = list(exclude or [])

    def documents(self, path: Path) -> Iterator[Document]:
        if not (path / TOPICS_FILE).is_file():
            self.skip("no pydoc_data/topics.py (not a standard-library folder)", str(path))
        else:
            for name, text in sorted(read_topics(path).items()):
                yield Document(
                    f"pydocs:topic/{name}", text.strip(), self.source, {"kind": "topic", "topic": name}
                )
        for file in sorted(path.rglob("*.py")):
            rel = file.relative_to(path).as_posix()
            if any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.exclude):
                continue
            doc = module_docstring(file.read_bytes())
            if doc is None or len(doc.strip()) < self.min_chars:
                continue
            module = rel[:-3].removesuffix("/__init__").replace("/", ".")
            yield Document(
                f"pydocs:module/{module}",
                doc.strip(),
                self.source,
                {"kind": "module docstring", "module": module, "path": rel},
            )
