"""One prepared run for a lent GPU (the device tool): the CUDA paths of the one loader, the one generation
engine and the Trainer's hooks, with numbers. Needs only torch, sentencepiece, safetensors, numpy, tqdm,
matplotlib and zstandard; the project runs from src/ without installing.

    PYTHONPATH=src python3 benchmarks/gpu_paths.py [CHECK ...]   (prints a report; also $OUT/gpu_paths.txt)

CHECK names some of: decode, eval, train (default: all).

1. flash SDPA in bf16;
2. `load_model(preset, device=cuda, dtype=bf16)`: decode tokens/s, eager against compiled, batch 1 and 8,
   and the caller's model keeps its classes after `Generator(compile=True)`; int8 quantized on load;
3. eval generation (`LlamaFoundryLM.generate`, 256 short prompts): eager against compiled;
4. `train(recipe, device="cuda")` in bf16 with compile, an `on_validate` hook and `init_state`.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(os.environ.get("OUT", "/tmp/gpu_paths"))
LINES: list[str] = []


def report(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_paths.txt").write_text("\n".join(LINES) + "\n")


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def check_sdpa() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(4, 16, 2048, 128, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the flash kernel cannot run
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    report(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: flash SDPA bf16 ok")


def check_decode() -> None:
    from llamafoundry.checkpoint import load_model
    from llamafoundry.inference import Generator, SamplingParams

    model, _, cfg = load_model("llama-110m", device="cuda", dtype="bfloat16")
    classes = {type(m) for m in model.modules()}
    params = SamplingParams(max_new_tokens=128, ignore_eos=True)
    for batch in (1, 8):
        prompts = [list(range(1, 65))] * batch
        for compile in (False, True):
            gen = Generator(model, compile=compile)
            gen.generate(prompts, params)  # compilation and warm-up
            seconds = timed(lambda g=gen, p=prompts: g.generate(p, params))
            mode = "compiled" if compile else "eager"
            report(f"decode llama-110m bf16 batch {batch} {mode}: {batch * 128 / seconds:,.0f} tok/s")
    assert {type(m) for m in model.modules()} == classes, "Generator changed the caller's model"
    report("Generator(compile=True) left the caller's module classes unchanged")
    quantized, _, _ = load_model("llama-110m", device="cuda", dtype="bfloat16", quantize="int8")
    out = Generator(quantized).generate([list(range(1, 17))], SamplingParams(max_new_tokens=16))
    report(f"int8 quantized on load, on cuda: {len(out[0].tokens)} tokens generated")


def tokenizer_and_texts(work: Path):
    from llamafoundry.tokenizer import load_tokenizer, train_tokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 4000)[:200]
    text = work / "corpus.txt"
    text.write_text("\n".join(p.read_text(errors="replace") for p in files))
    train_tokenizer([text], work / "tokenizer.model", vocab_size=4000)
    return load_tokenizer(work / "tokenizer.model"), files


def check_eval_generation(tokenizer) -> None:
    from llamafoundry.config import get_preset
    from llamafoundry.eval import LlamaFoundryLM
    from llamafoundry.inference import SamplingParams
    from llamafoundry.model import Transformer

    cfg = get_preset("llama-110m").replace(vocab_size=tokenizer.vocab_size)
    model = Transformer(cfg).to("cuda", torch.bfloat16)
    params = SamplingParams(max_new_tokens=32, stop=("\n",))
    requests = [(f"Question: what is item {i} of the list?\nAnswer:", params) for i in range(256)]
    for compile in (False, True):
        lm = LlamaFoundryLM(model, tokenizer, compile=compile)
        first = timed(lambda lm=lm: lm.generate(requests))
        second = timed(lambda lm=lm: lm.generate(requests))
        mode = "compiled" if compile else "eager"
        report(f"eval generate 256 x 32 tokens, {mode}: first run {first:.1f} s, second {second:.1f} s")


def check_trainer(tokenizer, files, work: Path) -> None:
    from llamafoundry.data.shards import build_shards
    from llamafoundry.train import load_run_recipe, train

    build_shards({"github": files}, work / "tokenizer.model", work / "tokens", val_fraction=0.05, workers=4)
    overrides = {
        "model.preset": "llama-110m",
        "model.vocab_size": str(tokenizer.vocab_size),
        "data.tokens": str(work / "tokens"),
        "data.seq_len": "512",
        "train.micro_batch": "8",
        "train.batch_tokens": "8192",
        "train.steps": "30",
        "train.precision": "bf16",
        "parallel.compile": "true",
        "eval.every": "10",
        "eval.batches": "2",
        "checkpoint.every": "0",
        "output.dir": str(work / "run"),
        "output.tensorboard": "false",
    }
    recipe = load_run_recipe(None, [x for k, v in overrides.items() for x in (f"--{k}", v)])
    calls = []

    def hook(trainer, step, record):
        calls.append(step)
        return {"hook_step": step}

    first = train(recipe, device="cuda", on_validate=[hook])
    report(
        f"train bf16 + compile on cuda: {first.steps} steps, val loss {first.val_loss:.3f}, hook at {calls}"
    )
    from llamafoundry.checkpoint import load_model

    state = load_model(work / "run" / "model")[0].state_dict()
    overrides["output.dir"] = str(work / "run2")
    overrides["train.steps"] = "2"
    recipe = load_run_recipe(None, [x for k, v in overrides.items() for x in (f"--{k}", v)])
    second = train(recipe, device="cuda", init_state=state)
    report(
        f"init_state from that model: 2 more steps, val loss {second.val_loss:.3f} (from {first.val_loss:.3f})"
    )


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    wanted = set(sys.argv[1:]) or {"decode", "eval", "train"}
    check_sdpa()
    if "decode" in wanted:
        run(check_decode)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer, files = tokenizer_and_texts(work)
        if "eval" in wanted:
            run(lambda: check_eval_generation(tokenizer), "check_eval_generation")
        if "train" in wanted:
            run(lambda: check_trainer(tokenizer, files, work), "check_trainer")


def run(step, name: str | None = None) -> None:
    """Run one check; a failure is reported and the next check still runs."""
    try:
        step()
    except Exception as exc:  # a report of every path, even when one fails
        report(f"FAILED {name or step.__name__}: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc(file=sys.stdout)


if __name__ == "__main__":
    main()
