"""benchmarks/eval_generation.py counts our greedy completions against lm-eval's `hf` model's. The two
decode the same tokens differently: lm-eval decodes the continuation's tokens alone, and the Llama
tokenizer then drops the space SentencePiece marks on the first piece (' Paris' comes back 'Paris');
our decoder decodes them after the prompt's last tokens, so that prompt + completion is the text the
tokens make (which code tasks need). On the benchmark's random model that alone made 44 of 64 NQ and 5
of 8 GSM8k completions "differ" while every generated token id agreed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "eval_generation", REPO / "benchmarks" / "eval_generation.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_leading_space_lm_eval_drops_is_no_difference(model_folders, llama_tokenizer):
    from transformers import AutoTokenizer

    from llamafoundry.inference.detokenize import IncrementalDecoder

    bench = _benchmark()
    prompt = llama_tokenizer.encode("Q: what is the capital of France?\nA:", bos=True)
    whole = llama_tokenizer.encode("Q: what is the capital of France?\nA: Paris", bos=True)
    assert whole[: len(prompt)] == prompt
    output = whole[len(prompt) :]
    decoder = IncrementalDecoder(llama_tokenizer, prompt, ("\n",))
    ours = decoder.extend(output) + decoder.flush()
    # What lm-eval's hf model returns for these tokens (HFLM.tok_decode of the continuation).
    theirs = AutoTokenizer.from_pretrained(model_folders["hf"]).decode(output, skip_special_tokens=True)
    assert (ours, theirs) == (" Paris", "Paris")
    assert bench.same_completion(ours, theirs)
    assert bench.same_completion("Paris", "Paris")
    assert not bench.same_completion("Paris", " Paris")
    assert not bench.same_completion(" Paris", "London")
    assert not bench.same_completion(" Paris", "Paris.")
