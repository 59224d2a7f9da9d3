"""Package faces that import on first use: `from llamafoundry.eval import evaluate` works, while importing
the package itself stays cheap. That matters because the lm-eval hook imports `llamafoundry.eval` in every
Python process of the environment, and `llamafoundry plan` imports `llamafoundry.train` at each start."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, module_of: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` (PEP 562) that loads each exported name from its submodule when first asked."""

    def __getattr__(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)

    return __getattr__
