"""Imports flow one way, like the data (STYLE.md): no cycles among our modules, counting the imports
inside functions too; `model.py` imports only `config`; nothing below `cli/` imports `cli/`."""

from __future__ import annotations

import ast
from pathlib import Path

import llamafoundry

PACKAGE = Path(llamafoundry.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _known(name: str) -> str:
    """The deepest module of ours that `name` (a module, or a name inside one) lives in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imported(module: str, path: Path) -> set[str]:
    """Our modules that `module` imports anywhere in its source, and the packages those imports run."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        targets |= {_known(name) for name in names if name.startswith("llamafoundry.")}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer lives there already.
    parents = {".".join(t.split(".")[:i]) for t in targets for i in range(2, t.count(".") + 1)}
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    return (targets | (parents - own)) - {module}


GRAPH = {module: _imported(module, path) for module, path in MODULES.items()}


def _cycle() -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_model_imports_only_config():
    assert GRAPH["llamafoundry.model"] == {"llamafoundry.config"}


def test_nothing_below_cli_imports_cli():
    offenders = {
        module: sorted(t for t in targets if t.startswith("llamafoundry.cli"))
        for module, targets in GRAPH.items()
        if not module.startswith("llamafoundry.cli")
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_graph_sees_imports_inside_functions():
    """The checks above would pass vacuously if lazy imports were missed: cli/models imports checkpoint
    inside its commands only."""
    assert "llamafoundry.checkpoint" in GRAPH["llamafoundry.cli.models"]
