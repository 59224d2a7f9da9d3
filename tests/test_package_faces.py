"""Each package's face: `checkpoint`, `inference`, `eval` and `train` export their public API, and the
lazy ones stay cheap to import (lm-eval's hook imports `llamafoundry.eval` in every Python process)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

FACES = {
    "llamafoundry.checkpoint": ["load_model", "save_model", "export"],
    "llamafoundry.inference": ["Generator", "SamplingParams", "QuantConfig", "negative_log_likelihood"],
    "llamafoundry.eval": ["evaluate", "LlamaFoundryLM", "RunConfig", "TASKS"],
    "llamafoundry.train": ["train", "Trainer", "RunRecipe", "load_run_recipe", "OptimConfig"],
}


@pytest.mark.parametrize("package", FACES)
def test_public_api_is_exported(package):
    module = importlib.import_module(package)
    assert set(FACES[package]) <= set(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is shadowed by a submodule"
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith(package), name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_lazy_faces_import_no_torch():
    code = "import sys, llamafoundry.eval, llamafoundry.inference, llamafoundry.train; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
