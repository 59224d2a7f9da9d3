"""Make `lm_eval --model llamafoundry` work with the released lm-evaluation-harness.

lm-evaluation-harness (0.4.x) finds models only in its own `lm_eval.models.MODEL_MAPPING`; it has no
plugin entry point and no flag to import outside code. So our installation ships `llamafoundry-lm-eval.pth`
(see setup.py), which calls `install()` at interpreter start: a meta-path finder that waits for
`lm_eval.models` to be imported and then registers "llamafoundry" as a lazy name, exactly as lm-eval
registers its own models. Nothing else is imported until lm-eval asks for the class.
This module imports only the standard library: it runs in every Python process of the environment.
"""

from __future__ import annotations

import sys

MODEL_NAME = "llamafoundry"
TARGET = "llamafoundry.eval.lm_eval_adapter:LlamaFoundryHarnessLM"
WATCHED = "lm_eval.models"


def register() -> None:
    """Register our model type with lm-eval's model registry (lazily: by 'module:class')."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


class _RegisterAfterImport:
    """A meta-path finder that finds nothing itself: when the other finders find `lm_eval.models`, it wraps
    the module's execution to register our model type right after. (The finder protocol needs only
    `find_spec`; subclassing importlib.abc.MetaPathFinder would cost ~15 ms at every interpreter start.)"""

    def find_spec(self, name, path, target=None):
        if name != WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module) -> None:
            run(module)
            register()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Called by the .pth file; registers at once if lm-eval's models are already imported."""
    if WATCHED in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
