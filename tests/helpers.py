"""Small builders shared by tests (not fixtures: plain functions, imported where used)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from llamafoundry.config import ModelConfig
from llamafoundry.model import Transformer

# A LLaMA-1 shaped config (multi-head attention) and a Llama-2 70B shaped one (grouped-query), both tiny.
MHA = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=96, multiple_of=32, max_seq_len=64)
GQA = ModelConfig(
    dim=64,
    n_layers=2,
    n_heads=8,
    n_kv_heads=2,
    vocab_size=96,
    multiple_of=32,
    max_seq_len=64,
    rope_theta=500.0,
    norm_eps=1e-5,
)


def random_model(cfg: ModelConfig = MHA, seed: int = 0) -> Transformer:
    """A model with random weights, norm gains included (so a wrong norm mapping cannot pass)."""
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.eval()


@dataclass
class Done:
    """What a command left behind, as `subprocess.run` would report it (the `cli` fixture returns one)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `llamafoundry ARGS` in a fresh interpreter, for tests where the process itself matters (a run
    killed with SIGKILL, a long training run). Error messages and exit codes: the `cli` fixture."""
    return subprocess.run(
        [sys.executable, "-m", "llamafoundry.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_user_error(result: Done | subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback.

    Progress bars drawn before the problem was found may precede that line.
    """
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if line.strip() and "\r" not in line and "%|" not in line
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llamafoundry") and "error:" in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tiny_train_args(tokens, out, **settings) -> list[str]:
    """`llamafoundry train` arguments for a seconds-long fp32 run of a dim-64, 2-layer model on `tokens`.

    `settings` override or add fields, with dots written as double underscores: train__steps=20.
    """
    values = {
        "data.tokens": tokens,
        "output.dir": out,
        "model.dim": 64,
        "model.n_layers": 2,
        "model.n_heads": 4,
        "model.vocab_size": 512,
        "model.max_seq_len": 64,
        "data.seq_len": 64,
        "train.batch_tokens": 1024,
        "train.micro_batch": 8,
        "train.lr": 2e-3,
        "train.precision": "fp32",
        "eval.every": 0,
        "eval.batches": 2,
        "output.tensorboard": "false",
    } | {key.replace("__", "."): value for key, value in settings.items()}
    return ["train"] + [part for key, value in values.items() for part in (f"--{key}", str(value))]


def train_losses(folder) -> dict[int, float]:
    """Step -> training loss, from a run's metrics.jsonl."""
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@contextmanager
def serving(server) -> Iterator[str]:
    """A `llamafoundry.inference.server.Server`'s app on a free port of 127.0.0.1, in a thread; yields its URL."""
    import uvicorn

    from llamafoundry.inference.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=30)


LLAMA2C_ORDER = (  # llama2.c's legacy export: each kind of tensor for all layers in turn
    "attention_norm",
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "ffn_norm",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)


def write_llama2c(path, model: Transformer):
    """`model` as a legacy llama2.c checkpoint: seven int32 (its classifier shared with the embedding),
    then float32 tensors in llama2.c's order, the rotary tables as zeros (readers compute their own)."""
    cfg, state = model.cfg, model.state_dict()
    tensors = [state["tok_embeddings.weight"]]
    tensors += [state[f"layers.{i}.{part}.weight"] for part in LLAMA2C_ORDER for i in range(cfg.n_layers)]
    tensors += [state["norm.weight"], torch.zeros(cfg.max_seq_len * cfg.head_dim)]
    header = [
        cfg.dim,
        cfg.ffn_hidden_dim,
        cfg.n_layers,
        cfg.n_heads,
        cfg.kv_heads,
        cfg.vocab_size,
        cfg.max_seq_len,
    ]
    body = b"".join(t.detach().float().contiguous().numpy().tobytes() for t in tensors)
    path.write_bytes(struct.pack("<7i", *header) + body)
    return path


class JSONHandler(BaseHTTPRequestHandler):
    """A base for local fakes of JSON web APIs: `read_json` the request, `answer` with a JSON payload."""

    def read_json(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def local_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free port of 127.0.0.1 in a thread; yields http://127.0.0.1:PORT."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def assert_llama_cpp_decodes_as_we_do(model, tokenizer, path) -> None:
    """llama.cpp, given our GGUF of `model`, computes our logits along our greedy tokens, and so picks
    the same tokens."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    from llamafoundry.checkpoint import export
    from llamafoundry.inference.generate import Generator
    from llamafoundry.inference.sampling import SamplingParams

    export(path, model, tokenizer, "gguf", dtype="f32")
    # A float32 KV cache (llama.cpp's default is float16) for float32 all the way, as ours.
    f32 = llama_cpp.GGML_TYPE_F32
    llm = Llama(
        model_path=str(path), n_ctx=256, n_threads=2, verbose=False, logits_all=True, type_k=f32, type_v=f32
    )
    prompt = tokenizer.encode("Once upon a time there was")
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    ours = Generator(model, tokenizer, kv_cache_dtype=torch.float32).generate([prompt], params)[0]
    theirs = []
    llm.eval(prompt)
    for _ in range(40):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs.append(token)
        llm.eval([token])
    # The same logits along the same tokens (float32 both; sums in another order)...
    model.clear_cache()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ours.tokens]))[0, len(prompt) - 1 : -1]
    llm.reset()
    llm.eval(prompt + ours.tokens)
    np.testing.assert_allclose(
        llm.scores[len(prompt) - 1 : llm.n_tokens - 1], logits.numpy(), atol=2e-4, rtol=0
    )
    # ...so the same greedy tokens, up to the first near-tie, where rounding may pick either.
    top2 = logits.topk(2, dim=-1).values
    clear = int(((top2[:, 0] - top2[:, 1]) > 1e-3).int().cumprod(0).sum())
    assert clear >= 15
    assert theirs[:clear] == ours.tokens[:clear]
