"""Code generation (Sec. 3.5, Table 8): HumanEval and MBPP, pass@k.

n programs are sampled per problem at temperature 0.1 (for pass@1) and at 0.8 (for pass@100 on
HumanEval, pass@80 on MBPP), as the paper did; pass@k is the unbiased estimator of Chen et al. (2021),
1 - C(n - c, k) / C(n, k) for c correct samples out of n. Every program runs in `sandbox.py`.
"""

from __future__ import annotations

import abc
from math import comb
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.eval.lm import LM
from llamafoundry.eval.sandbox import (
    MINIMUM_LAYERS,
    Limits,
    SandboxUnavailable,
    require_minimum_layers,
    run_programs,
)
from llamafoundry.eval.tasks.base import (
    Doc,
    Pool,
    RunConfig,
    Task,
    TaskResult,
    from_hub,
    nonempty,
    read_jsonl,
    require,
    sample_shots,
)
from llamafoundry.eval.tasks.multiple_choice import mean
from llamafoundry.inference.sampling import SamplingParams

TEMPERATURES = (0.1, 0.8)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


class CodeTask(Task):
    paper_metric = "pass@1"
    k_max: int
    stop: tuple[str, ...]
    limits = Limits(timeout_s=10.0)

    @abc.abstractmethod
    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """What the model continues."""

    @abc.abstractmethod
    def program(self, doc: Doc, completion: str) -> str:
        """The generated code and the problem's tests, as one Python program."""

    def evaluate(self, lm: LM, docs: list[Doc], pool: list[Doc], config: RunConfig) -> TaskResult:
        shots = self.shots(config)
        n = self.k_max if config.samples is None else config.samples
        if n < 1:
            raise UserError(f"{self.name} needs --samples of at least 1 (pass@k samples per problem)")
        tokens = config.max_new_tokens or 512
        self._check_sandbox(config)  # before hours of generation, not after
        prompts = [
            self.prompt(d, sample_shots(pool, shots, config.seed, d["id"]) if shots else []) for d in docs
        ]
        correct: dict[float, list[int]] = {}
        layers: list[set[str]] = []
        examples = [{"id": d["id"], "prompt": p} for d, p in zip(docs, prompts, strict=True)]
        for temperature in TEMPERATURES:
            params = [
                SamplingParams(tokens, temperature, stop=self.stop, seed=config.seed + j) for j in range(n)
            ]
            outs = lm.generate([(p, q) for p in prompts for q in params], desc=f"{self.name} T={temperature}")
            programs = [self.program(d, outs[i * n + j]) for i, d in enumerate(docs) for j in range(n)]
            results = run_programs(
                programs,
                self.limits,
                desc=f"{self.name} sandbox T={temperature}",
                allow_unsafe=True,  # _check_sandbox refused already, before generating
            )
            layers.append(set.intersection(*(set(r.isolation) for r in results)) if results else set())
            correct[temperature] = []
            for i, example in enumerate(examples):
                statuses = [r.status for r in results[i * n : (i + 1) * n]]
                correct[temperature].append(statuses.count("passed"))
                example[f"T={temperature}"] = {
                    "completions": outs[i * n : (i + 1) * n],
                    "statuses": statuses,
                    "correct": statuses.count("passed"),
                    "n": n,
                }
        metrics = {"pass@1": mean([pass_at_k(n, c, 1) for c in correct[0.1]])}
        for k in sorted({1, 10, self.k_max}):
            if k <= n:
                metrics[f"pass@{k} (T=0.8)"] = mean([pass_at_k(n, c, k) for c in correct[0.8]])
        if self.k_max <= n:
            metrics[f"pass@{self.k_max}"] = metrics[f"pass@{self.k_max} (T=0.8)"]
        common = set.intersection(*layers) if layers else set()
        sandbox = {
            "layers": sorted(common),  # in force for every program
            "minimum_met": common >= MINIMUM_LAYERS,
            "unsafe_no_sandbox": config.unsafe_no_sandbox,
        }
        return TaskResult(
            self.name, shots, metrics, self.paper_metric, examples, details={"sandbox": sandbox}
        )

    def _check_sandbox(self, config: RunConfig) -> None:
        if config.unsafe_no_sandbox:
            return
        try:
            require_minimum_layers(self.limits)
        except SandboxUnavailable as exc:
            raise UserError(
                f"{self.name}: {exc}. Run on a machine that allows user, mount, PID and network namespaces, "
                "or pass --unsafe-no-sandbox to run generated code anyway (only where losing the machine is fine)"
            ) from None


class HumanEval(CodeTask):
    """Chen et al. (2021): 164 functions to complete from their signature and docstring, zero-shot."""

    name = "humaneval"
    k_max = 100
    stop = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop sequences

    def docs(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is None:
            return from_hub("openai/openai_humaneval", None, "test", lambda r, i: dict(r, id=r["task_id"]))
        path = require(data_dir, "humaneval/HumanEval.jsonl.gz", "humaneval/HumanEval.jsonl")
        return nonempty([dict(row, id=row["task_id"]) for row in read_jsonl(path)], path)

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["prompt"]

    def program(self, doc: Doc, completion: str) -> str:
        return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


class MBPP(CodeTask):
    """Austin et al. (2021): the test split (task ids 11-510), 3-shot from the prompt split (ids 1-10)."""

    name = "mbpp"
    k_max = 80
    default_shots = 3
    stop = ("[DONE]",)

    def _rows(self, data_dir: Path | None) -> list[dict]:
        if data_dir is None:
            return [
                dict(r)
                for split in ("prompt", "test")
                for r in from_hub("google-research-datasets/mbpp", "full", split, lambda row, i: row)
            ]
        path = require(data_dir, "mbpp/mbpp.jsonl")
        return nonempty(read_jsonl(path), path)

    def docs(self, data_dir: Path | None) -> list[Doc]:
        return [self.doc(r) for r in self._rows(data_dir) if 11 <= r["task_id"] <= 510]

    def fewshot_pool(self, data_dir: Path | None) -> Pool:
        """MBPP's prompt split, the problems its authors set aside for few-shot prompts."""
        return Pool([self.doc(r) for r in self._rows(data_dir) if 1 <= r["task_id"] <= 10], "prompt split")

    @staticmethod
    def doc(row: dict) -> Doc:
        return {
            "id": f"mbpp-{row['task_id']}",
            "text": row["text"],
            "code": row["code"].replace("\r\n", "\n"),
            "tests": list(row["test_list"]),
            "setup": row.get("test_setup_code", ""),
        }

    @staticmethod
    def _task(doc: Doc) -> str:
        tests = "\n".join(doc["tests"])
        return (
            f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
        )

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return "".join(f"{self._task(s)}{s['code']}\n[DONE]\n\n" for s in shots) + self._task(doc)

    def program(self, doc: Doc, completion: str) -> str:
        return f"{doc['setup']}\n{completion}\n\n" + "\n".join(doc["tests"]) + "\n"


CODE_TASKS = [HumanEval(), MBPP()]
