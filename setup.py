"""Build hook: install `llamafoundry-lm-eval.pth` beside the package, so `lm_eval --model llamafoundry` works.

lm-evaluation-harness 0.4.x has no plugin entry point; a .pth file is Python's own way to run one line
at interpreter start (see src/llamafoundry/eval/lm_eval_plugin.py). Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "llamafoundry-lm-eval.pth"
LINE = "import llamafoundry.eval.lm_eval_plugin as p; p.install()\n"


class BuildPyWithPth(build_py):
    """Also write the .pth at the root of the build (wheel), or of the editable wheel."""

    def run(self) -> None:
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / PTH).write_text(LINE, encoding="utf-8")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
