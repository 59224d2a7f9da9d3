"""A bounded load test of `llamafoundry serve`, from a second process over 127.0.0.1.

    python benchmarks/server_load.py                   # 600 requests, 16 at a time
    python benchmarks/server_load.py --requests 60     # a short run

Starts the server on a tiny random model (Meta's tokenizer) as a subprocess, then sends a fixed mix of
requests, at most `--concurrency` at a time: completions and chat completions, streamed and not,
streaming clients that hang up after two chunks, and one poisoned request (seed 2**70, out of the
sampler's range) among them. Each request has an expected outcome (the poisoned one: 400 naming `seed`;
a hang-up: a stream that had begun; the rest: 200 and a whole reply); any other outcome, an exception, or
requests still counted in flight at the end is an unintended error. Prints the count by status, the
latency p50/p99 of each kind, and the server's resident memory (RSS) at start, after a warm-up of the
first tenth of the requests and at the end: flat means it grew less than 5% after the warm-up.
Other processes on the machine slow every request: the latencies are only comparable on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEY = "sk-load-test"
NAME = "tiny"
POISON = {"seed": 2**70}  # out of range for torch.Generator.manual_seed: once a 500 for its whole batch
WORDS = ["the", "a", "king", "once", "upon", "time", "story", "river", "stone", "dark", "said", "old"]


@dataclass(frozen=True)
class Shot:
    """One request of the plan."""

    kind: str  # completion, completion-stream, chat, chat-stream, hang-up, poisoned
    path: str
    body: dict


@dataclass
class Outcome:
    kind: str
    status: int | None
    seconds: float
    problem: str | None  # None: the outcome this kind of request should have


def make_model(
    folder: Path, tokenizer_file: Path = SHARED / "models" / "llama_tokenizer" / "tokenizer.model"
) -> Path:
    """A random 2-layer, dim-64 model with Meta's 32,000-piece tokenizer, as our native folder."""
    import torch

    from llamafoundry.checkpoint import save_model
    from llamafoundry.config import ModelConfig
    from llamafoundry.model import Transformer
    from llamafoundry.tokenizer import load_tokenizer

    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=32000, multiple_of=32, max_seq_len=256)
    tokenizer = load_tokenizer(tokenizer_file)
    return save_model(folder, Transformer(cfg).eval(), tokenizer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    pid: int


@contextmanager
def serving(folder: Path, *options: str) -> Iterator[Served]:
    """`llamafoundry serve FOLDER` in a subprocess on a free local port, until the block ends."""
    port = _free_port()
    command = [sys.executable, "-m", "llamafoundry.cli", "serve", str(folder), "--port", str(port)]
    command += ["--api-key", KEY, "--model-name", NAME, *options]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, log)
            yield Served(url, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)


def _wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read().decode()[-3000:]}")
        try:
            httpx.get(url + "/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the server did not answer /health within 180 s")


def plan(count: int, seed: int = 0) -> list[Shot]:
    """`count` requests of every kind in a seeded order, the poisoned one halfway."""
    rng = random.Random(seed)
    kinds = ["completion", "completion-stream", "chat", "chat-stream", "hang-up"]
    shots = []
    for i in range(count - 1):
        kind = kinds[i % len(kinds)]
        text = " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))
        body: dict = {"model": NAME, "max_tokens": rng.randint(8, 48), "temperature": 0.8, "seed": i}
        if kind.startswith("chat"):
            path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": text}]
        else:
            path, body["prompt"] = "/v1/completions", text
        body["stream"] = kind.endswith("stream") or kind == "hang-up"
        shots.append(Shot(kind, path, body))
    rng.shuffle(shots)
    poisoned = {"model": NAME, "prompt": "a poisoned request", "max_tokens": 16, **POISON}
    shots.insert(len(shots) // 2, Shot("poisoned", "/v1/completions", poisoned))
    return shots


def send(client: httpx.Client, url: str, shot: Shot) -> Outcome:
    """Send one request and judge its outcome against what its kind should get."""
    start = time.perf_counter()
    try:
        with client.stream("POST", url + shot.path, json=shot.body) as response:
            if shot.kind == "hang-up":
                return _hang_up(shot, response, start)
            response.read()
            status = response.status_code
            problem = _judge(shot, status, response.text)
    except httpx.HTTPError as exc:
        return Outcome(shot.kind, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    return Outcome(shot.kind, status, time.perf_counter() - start, problem)


def _hang_up(shot: Shot, response: httpx.Response, start: float) -> Outcome:
    chunks = 0
    if response.status_code == 200:
        for line in response.iter_lines():
            chunks += line.startswith("data: ")
            if chunks == 2:
                break  # leaving the block closes the connection mid-stream
    problem = None if response.status_code == 200 and chunks else f"no stream began ({response.status_code})"
    return Outcome(shot.kind, response.status_code, time.perf_counter() - start, problem)


def _judge(shot: Shot, status: int, text: str) -> str | None:
    what = " ".join(text.split())[-200:]  # one line, the end of the reply (a stream's error is last)
    if shot.kind == "poisoned":
        param = json.loads(text).get("error", {}).get("param") if status == 400 else None
        return None if param == "seed" else f"expected 400 naming seed, got {status}: {what}"
    if status != 200:
        return f"{status}: {what}"
    if shot.body["stream"]:
        events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]" or any('"error"' in e for e in events):
            return f"stream did not end with [DONE] alone: {what}"
        return None
    choice = json.loads(text)["choices"][0]
    content = choice["message"]["content"] if shot.kind == "chat" else choice["text"]
    if not isinstance(content, str) or choice["finish_reason"] not in ("stop", "length"):
        return f"malformed reply: {what}"
    return None


def fire(url: str, shots: list[Shot], concurrency: int) -> list[Outcome]:
    """Send every shot, at most `concurrency` at a time; the outcomes come in the order of `shots`."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(headers=headers, limits=limits, timeout=300) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(pool.map(lambda shot: send(client, url, shot), shots))


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (Linux's /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def in_flight_at_rest(url: str) -> int:
    """Requests the server still counts in flight once it has had a few seconds to notice hang-ups."""
    deadline = time.monotonic() + 10
    while True:
        count = httpx.get(url + "/health", timeout=30).json()["in_flight"]
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


@dataclass
class Report:
    outcomes: list[Outcome]
    rss: tuple[int, int, int]  # bytes at start, after the warm-up, at the end
    in_flight: int  # requests still counted in flight at the end

    @property
    def unintended(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem is not None]

    @property
    def growth(self) -> float:
        """RSS growth after the warm-up, as a fraction."""
        return self.rss[2] / self.rss[1] - 1


def run(
    folder: Path, requests: int, concurrency: int, max_batch: int = 8, compile_mode: str | None = None
) -> Report:
    """Serve `folder` (in serve's own compile mode unless `compile_mode`), send `requests` requests in
    two phases (a tenth, then the rest), measure."""
    shots = plan(requests)
    warm = max(1, len(shots) // 10)
    options = ["--max-batch", str(max_batch), "--max-tokens-limit", "64"]
    options += ["--compile-mode", compile_mode] if compile_mode else []
    with serving(folder, *options) as served:
        start = rss(served.pid)
        outcomes = fire(served.url, shots[:warm], concurrency)
        warmed = rss(served.pid)
        outcomes += fire(served.url, shots[warm:], concurrency)
        in_flight = in_flight_at_rest(served.url)
        return Report(outcomes, (start, warmed, rss(served.pid)), in_flight)


def print_report(report: Report, concurrency: int) -> None:
    outcomes = report.outcomes
    print(f"{len(outcomes)} requests, at most {concurrency} at a time, from a second process on 127.0.0.1")
    statuses = Counter(str(o.status) for o in outcomes)
    print("by status:", ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())))
    print(f"{'kind':<18} {'count':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in sorted({o.kind for o in outcomes}):
        seconds = [o.seconds for o in outcomes if o.kind == kind]
        p50, p99 = _percentile(seconds, 50), _percentile(seconds, 99)
        print(f"{kind:<18} {len(seconds):>5} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f}")
    whole = [o.seconds for o in outcomes if o.kind not in ("hang-up", "poisoned")]
    print(
        f"whole replies: p50 {_percentile(whole, 50) * 1000:.1f} ms, p99 {_percentile(whole, 99) * 1000:.1f} ms"
    )
    mib = [value / 2**20 for value in report.rss]
    flat = "flat" if report.growth < 0.05 else "NOT flat"
    print(
        f"server RSS: start {mib[0]:.1f} MiB, after warm-up {mib[1]:.1f} MiB, end {mib[2]:.1f} MiB "
        f"({report.growth * 100:+.2f}% after warm-up: {flat})"
    )
    print(f"in flight at the end: {report.in_flight}")
    for outcome in report.unintended:
        print(f"  unintended: {outcome.kind}: {outcome.problem}")
    print(f"unintended errors: {len(report.unintended) + (report.in_flight != 0)}")


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="requests in all (default 600)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests at a time (default 16)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (other processes slow every request)")
    with tempfile.TemporaryDirectory() as tmp:
        report = run(make_model(Path(tmp) / NAME), args.requests, args.concurrency)
    print_report(report, args.concurrency)
    if report.unintended or report.in_flight:
        sys.exit(1)


if __name__ == "__main__":
    main()
