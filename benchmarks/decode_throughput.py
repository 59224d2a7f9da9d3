"""Prefill and decode speed: ours against Hugging Face `generate` and llama.cpp, measured in one run.

    python benchmarks/decode_throughput.py            # the issue's shape: dim 512, 8 layers, vocab 32000
    python benchmarks/decode_throughput.py --quick    # a short smoke run

One random model (decoding speed does not depend on the weights' values) is run greedily by each engine:
prompt of `--prompt` tokens, then `--new-tokens` tokens, at batch 1 and batch 8, float32 and int8;
ours with its defaults (a float32 KV cache, the default compilation) and tuned (row "ours tuned": a
float16 KV cache, as llama.cpp keeps its cache by default, and for float32 weights
`compile_mode="max-autotune"`: frozen weights and inductor's C++ GEMM template for batched decoding).
Prefill tokens/s is the prompt tokens over the time to the first new token; decode tokens/s is the
tokens generated after that over the time they took. Decoding one token reads every weight once, so
its ceiling is memory bandwidth / weight bytes (the roofline), with the bandwidth measured here.
llama.cpp (through llama-cpp-python, `pip install 'llamafoundry[bench]'`) runs our own GGUF export, F32
and Q8_0, as a column when installed. Other processes on the machine distort every number: run it on
an idle machine (the script prints the load average it saw).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gguf
import numpy as np
import torch

from llamafoundry.checkpoint import export
from llamafoundry.checkpoint.gguf import GGUF_TYPES
from llamafoundry.checkpoint.hf import hf_config, to_hf
from llamafoundry.config import ModelConfig
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.perplexity import perplexity
from llamafoundry.inference.quantize import QuantConfig, quantize_model, weight_bytes
from llamafoundry.inference.sampling import SamplingParams
from llamafoundry.model import Transformer
from llamafoundry.tokenizer import Tokenizer, load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


TUNED = "ours tuned"  # float16 KV cache; float32 weights also compile with mode "max-autotune"


@dataclass
class Result:
    engine: str
    precision: str
    batch: int
    prefill: float  # tokens/s
    decode: float  # tokens/s


def measure_bandwidth(threads: int) -> float:
    """Read bandwidth in bytes/s: the best of several sums over a buffer far larger than the caches."""
    data = torch.ones(64 * 2**20)  # 256 MiB
    best = float("inf")
    for _ in range(8):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * data.element_size() / best


def run_ours(generator: Generator, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """(seconds to the first new token, seconds for the remaining new_tokens - 1 steps)."""
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    start = time.perf_counter()
    first = None
    for _ in generator.stream(prompts, params):
        first = first or time.perf_counter()
    return first - start, time.perf_counter() - first


def run_hf(hf, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    ids = torch.tensor(prompts)

    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
        return time.perf_counter() - start

    first = timed(1)
    return first, timed(new_tokens) - first


class LlamaCpp:
    """llama.cpp through llama-cpp-python's C API: `batch` sequences decoded together, greedy."""

    def __init__(self, path: Path, batch: int, context: int, threads: int) -> None:
        import llama_cpp as ll

        self.ll = ll
        self._quiet = ll.llama_log_callback(lambda *args: None)  # kept referenced: llama.cpp calls it later
        ll.llama_log_set(self._quiet, ctypes.c_void_p(0))
        params = ll.llama_model_default_params()
        self.model = ll.llama_model_load_from_file(str(path).encode(), params)
        ctx = ll.llama_context_default_params()
        ctx.n_ctx, ctx.n_seq_max, ctx.n_batch, ctx.n_ubatch = batch * context, batch, 512, 512
        ctx.n_threads = ctx.n_threads_batch = threads
        ctx.kv_unified = True
        self.ctx = ll.llama_init_from_model(self.model, ctx)
        self.vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(self.model))
        self.batch = ll.llama_batch_init(512, 0, batch)

    def close(self) -> None:
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) items, 512 at a time."""
        for start in range(0, len(items), 512):
            chunk = items[start : start + 512]
            b = self.batch
            b.n_tokens = len(chunk)
            for i, (token, pos, seq, logits) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
                b.seq_id[i][0] = seq
            if self.ll.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")

    def _argmax(self, index: int) -> int:
        logits = np.ctypeslib.as_array(self.ll.llama_get_logits_ith(self.ctx, index), shape=(self.vocab,))
        return int(logits.argmax())

    def run(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        length = len(prompts[0])
        start = time.perf_counter()
        items = [(t, pos, seq, pos == length - 1) for seq, p in enumerate(prompts) for pos, t in enumerate(p)]
        # Each sequence's last prompt token asks for logits; llama.cpp numbers outputs in batch order.
        per_chunk = [items[i : i + 512] for i in range(0, len(items), 512)]
        tokens = []
        for chunk in per_chunk:
            self._decode(chunk)
            outputs = [i for i, item in enumerate(chunk) if item[3]]
            tokens += [self._argmax(i) for i in outputs]
        first = time.perf_counter()
        for step in range(new_tokens - 1):
            self._decode([(tok, length + step, seq, True) for seq, tok in enumerate(tokens)])
            tokens = [self._argmax(i) for i in range(len(prompts))]
        return first - start, time.perf_counter() - first


def rates(name: str, precision: str, batch: int, prompt: int, new: int, times: tuple[float, float]) -> Result:
    return Result(name, precision, batch, batch * prompt / times[0], batch * (new - 1) / times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="rounds of measurements (every engine once per round); the fastest counts",
    )
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even if installed")
    parser.add_argument("--quick", action="store_true", help="prompt 64, 32 new tokens (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.prompt, args.new_tokens = 64, 32
    torch.set_num_threads(args.threads)
    context = args.prompt + args.new_tokens
    cfg = ModelConfig(
        dim=args.dim,
        n_layers=args.layers,
        n_heads=args.heads,
        vocab_size=args.vocab,
        multiple_of=256,
        max_seq_len=context,
    )
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    int8 = quantize_model(copy.deepcopy(model), QuantConfig("int8"))
    bandwidth = measure_bandwidth(args.threads)
    fp32_bytes, int8_bytes = weight_bytes(model), weight_bytes(int8)
    print(
        f"model: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, ffn {cfg.ffn_hidden_dim}, vocab "
        f"{cfg.vocab_size}; prompt {args.prompt}, {args.new_tokens} new tokens, {args.threads} threads; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"memory bandwidth (measured): {bandwidth / 1e9:.1f} GB/s; weight bytes per decoded token: fp32 "
        f"{fp32_bytes / 1e6:.1f} MB, int8 {int8_bytes / 1e6:.1f} MB -> batch-1 roofline fp32 "
        f"{bandwidth / fp32_bytes:.0f} tok/s, int8 {bandwidth / int8_bytes:.0f} tok/s"
    )

    prompts = {
        b: [[(7 * i + 13 * s) % (cfg.vocab_size - 3) + 3 for i in range(args.prompt)] for s in range(b)]
        for b in args.batches
    }
    runners = runners_ours(model, int8, prompts, args.new_tokens)
    if not args.no_hf:
        runners += runners_hf(model, cfg, prompts, args.new_tokens)
    engines: list[LlamaCpp] = []
    if not args.no_llama_cpp:
        runners += runners_llama_cpp(model, cfg, args, prompts, context, engines)
    # Round-robin: every engine runs once per round, so a busy spell of the machine hits them all alike.
    times: dict[tuple, list[tuple[float, float]]] = {key: [] for key, _ in runners}
    for round_ in range(args.runs):
        for key, run in runners:
            times[key].append(run())
        print(f"round {round_ + 1}/{args.runs} done (load average {os.getloadavg()[0]:.2f})", flush=True)
    for engine in engines:
        engine.close()
    results = []
    for (engine, precision, batch), runs in times.items():
        best = (min(t[0] for t in runs), min(t[1] for t in runs))
        results.append(rates(engine, precision, batch, args.prompt, args.new_tokens, best))
    report(results, args)
    quality()


Runner = tuple[tuple[str, str, int], Callable[[], tuple[float, float]]]


def runners_ours(model: Transformer, int8: Transformer, prompts: dict, new_tokens: int) -> list[Runner]:
    """Ours with its defaults and tuned (see TUNED), each in fp32 and int8."""
    half = torch.float16
    runners = []
    for name, precision, generator in (
        ("ours", "fp32", Generator(model, compile=True)),
        ("ours", "int8", Generator(int8, compile=True)),
        (
            TUNED,
            "fp32",
            Generator(copy.deepcopy(model), compile=True, compile_mode="max-autotune", kv_cache_dtype=half),
        ),
        (TUNED, "int8", Generator(copy.deepcopy(int8), compile=True, kv_cache_dtype=half)),
        (
            "ours",
            "int4",
            Generator(quantize_model(copy.deepcopy(model), QuantConfig("int4", 32)), compile=True),
        ),
    ):
        generator.reserve(max(prompts))  # one KV cache for every batch size, as the server does
        for b, batch in prompts.items():
            run_ours(generator, batch, 4)  # compile for this batch size
            runners.append(((name, precision, b), partial(run_ours, generator, batch, new_tokens)))
    return runners


def runners_hf(model: Transformer, cfg: ModelConfig, prompts: dict, new_tokens: int) -> list[Runner]:
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaForCausalLM(LlamaConfig(**hf_config(cfg, torch.float32, None))).eval()
    hf.load_state_dict(to_hf(model.state_dict(), cfg))
    for batch in prompts.values():
        run_hf(hf, batch, 2)  # warm up
    return [
        (("HF generate", "fp32", b), partial(run_hf, hf, batch, new_tokens)) for b, batch in prompts.items()
    ]


def runners_llama_cpp(
    model: Transformer, cfg: ModelConfig, args, prompts: dict, context: int, engines: list
) -> list[Runner]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp: not installed (pip install 'llamafoundry[bench]'); its column is left out")
        return []
    tokenizer = _tokenizer_for(cfg.vocab_size)
    tmp = Path(tempfile.mkdtemp())
    runners = []
    # Our exporter writes no Q4_0 (llama.cpp's 4-bit type, groups of 32); gguf-py quantizes to it.
    GGUF_TYPES.setdefault("q4_0", (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0))
    for precision, kind in (("fp32", "f32"), ("int8", "q8_0"), ("int4", "q4_0")):
        path = export(tmp / f"model-{kind}.gguf", model, tokenizer, "gguf", dtype=kind)
        for b, batch in prompts.items():
            engine = LlamaCpp(path, b, context, args.threads)
            engine.run(batch, 4)  # warm up
            engines.append(engine)
            runners.append((("llama.cpp", precision, b), partial(engine.run, batch, args.new_tokens)))
    return runners


def _tokenizer_for(vocab: int) -> Tokenizer:
    """Meta's tokenizer when the vocabulary is its 32000, else one trained to the size (GGUF needs a vocab)."""
    if vocab == 32000 and (SHARED / "models/llama_tokenizer/tokenizer.model").is_file():
        return load_tokenizer(SHARED / "models/llama_tokenizer/tokenizer.model")
    from llamafoundry.tokenizer import train_tokenizer

    out = Path(tempfile.mkdtemp()) / "tokenizer.model"
    return train_tokenizer([SHARED / "corpora/tinyshakespeare/input.txt"], out, vocab_size=vocab)


def report(results: list[Result], args) -> None:
    def find(engine: str, precision: str, batch: int) -> Result | None:
        return next(
            (r for r in results if (r.engine, r.precision, r.batch) == (engine, precision, batch)), None
        )

    print("\nengine          precision  batch   prefill tok/s   decode tok/s   decode vs HF   vs llama.cpp")
    for r in results:
        hf, cpp = find("HF generate", "fp32", r.batch), find("llama.cpp", r.precision, r.batch)
        vs_hf = f"{r.decode / hf.decode:.2f}x" if hf else "-"
        vs_cpp = f"{r.decode / cpp.decode:.2f}x" if cpp else "-"
        print(
            f"{r.engine:<15} {r.precision:<9} {r.batch:>5} {r.prefill:>15.0f} {r.decode:>14.1f} {vs_hf:>14} "
            f"{vs_cpp:>14}"
        )
    targets = [
        ("batch-1 fp32 decode >= 3x HF", "ours", "fp32", 1, "HF generate", "fp32", 3.0),
        ("batch-1 fp32 decode >= 0.75x llama.cpp F32", "ours", "fp32", 1, "llama.cpp", "fp32", 0.75),
        ("batch-8 fp32 decode >= llama.cpp F32", "ours", "fp32", 8, "llama.cpp", "fp32", 1.0),
        ("batch-1 int8 decode >= 0.75x llama.cpp Q8_0", "ours", "int8", 1, "llama.cpp", "int8", 0.75),
    ]
    targets += [(f"(tuned) {label}", TUNED, *rest) for label, _, *rest in targets]
    print()
    for label, e, p, b, pe, pp, goal in targets:
        ours, peer = find(e, p, b), find(pe, pp, b)
        if ours and peer:
            ratio = ours.decode / peer.decode
            print(f"target {label}: {ratio:.2f}x -> {'met' if ratio >= goal else 'NOT met'}")


def quality() -> None:
    """Perplexity before/after quantizing, on the one trained model here (stories260K, from llama2.c).

    Its tokenizer is not public, so the held-out text is four 512-token stories sampled from the float model.
    """
    path = SHARED / "models/stories260K/stories260K.bin"
    if not path.is_file():
        return
    from llamafoundry.checkpoint import load_model

    model, _, _ = load_model(path)
    params = [SamplingParams(max_new_tokens=511, temperature=1.0, seed=s, ignore_eos=True) for s in range(4)]
    ids = [t for story in Generator(model).generate([[1]] * 4, params) for t in [1] + story.tokens]
    model.clear_cache()
    base = perplexity(model, ids)
    line = f"\nquality (stories260K, perplexity on {len(ids)} sampled tokens): float32 {base:.3f}"
    for method, group in (("int8", 128), ("int4", 32)):
        ppl = perplexity(quantize_model(copy.deepcopy(model), QuantConfig(method, group)), ids)
        line += f", {method} {ppl:.3f} ({(ppl / base - 1) * 100:+.1f}%)"
    print(line)


if __name__ == "__main__":
    main()
