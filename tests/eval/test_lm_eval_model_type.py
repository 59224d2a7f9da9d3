"""Our lm-evaluation-harness model type: registration, and each request kind lm-eval sends."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from lm_eval.api.instance import Instance

from llamafoundry.eval.lm_eval_adapter import LlamaFoundryHarnessLM
from llamafoundry.inference.sampling import SamplingParams


@pytest.fixture(scope="module")
def harness_lm(model_folders) -> LlamaFoundryHarnessLM:
    return LlamaFoundryHarnessLM(pretrained=str(model_folders["native"]), batch_size="8", device="cuda")


def instance(kind: str, args: tuple) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_installed_hook_registers_the_model_type_when_lm_eval_loads():
    """A fresh interpreter (with the .pth our install ships) knows "llamafoundry" alongside lm-eval's own."""
    code = (
        "from lm_eval.api.registry import get_model; "
        "print(get_model('llamafoundry').__name__, get_model('hf').__name__)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-1500:]
    assert run.stdout.split() == ["LlamaFoundryHarnessLM", "HFLM"]


def test_loglikelihood_requests_are_scored_by_our_scorer(harness_lm):
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " Rome"), ("", "Hello")]
    got = harness_lm.loglikelihood([instance("loglikelihood", p) for p in pairs], disable_tqdm=True)
    assert got == harness_lm.lm.loglikelihood(pairs)


def test_rolling_loglikelihood_sums_the_whole_text_in_windows(harness_lm):
    """For a text that fits one window it is log P(text | BOS); a longer one is cut into windows."""
    lm = harness_lm.lm
    text = "A short document about llamas. " * 3
    (got,) = harness_lm.loglikelihood_rolling([instance("loglikelihood_rolling", (text,))], disable_tqdm=True)
    ids = lm.tokenizer.encode(text)
    with torch.no_grad():
        logprobs = lm.model(torch.tensor([ids[:-1]])).log_softmax(-1)[0]
    assert got == pytest.approx(logprobs.gather(1, torch.tensor(ids[1:])[:, None]).sum().item(), abs=1e-3)
    long_text = "word " * 1500  # > 512-token window
    (total,) = harness_lm.loglikelihood_rolling(
        [instance("loglikelihood_rolling", (long_text,))], disable_tqdm=True
    )
    assert total < 20 * got  # every token scored: far more negative than the short text


def test_generate_until_honours_until_and_length(harness_lm):
    requests = [
        ("Once upon a time", {"until": ["\n\n"], "max_gen_toks": 9}),
        ("The", {"until": "e", "max_gen_toks": 16, "do_sample": False}),
    ]
    got = harness_lm.generate_until([instance("generate_until", r) for r in requests], disable_tqdm=True)
    want = harness_lm.lm.generate(
        [
            ("Once upon a time", SamplingParams(9, stop=("\n\n",))),
            ("The", SamplingParams(16, stop=("e",))),
        ]
    )
    assert got == want and "e" not in got[1]
