"""The `generate`, `quantize` and `serve` commands, run as a user runs them: in this process through the
CLI's `main`, and as real subprocesses where the process boundary matters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import llamafoundry
from llamafoundry.checkpoint import load_model
from llamafoundry.inference.generate import Generator
from llamafoundry.inference.sampling import SamplingParams


def test_generate_prints_prompt_and_completion(stories_folder, cli):
    done = cli("generate", stories_folder, "Once upon a time", "--max-new-tokens", 16, "--temperature", 0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Once upon a time") and len(done.stdout) > len("Once upon a time") + 1
    streamed = cli(
        "generate", stories_folder, "Once upon a time", "--max-new-tokens", 16, "--temperature", 0, "--stream"
    )
    assert streamed.stdout == done.stdout
    half_cache = cli(
        "generate", stories_folder, "Once upon a time", "--max-new-tokens", 16, "--kv-cache-dtype", "float16"
    )
    assert half_cache.returncode == 0, half_cache.stderr
    assert half_cache.stdout.startswith("Once upon a time") and len(half_cache.stdout) > len(
        "Once upon a time"
    )


def test_generate_seed_reproduces_and_stop_cuts(stories_folder, cli):
    args = [
        "generate",
        stories_folder,
        "The king",
        "--max-new-tokens",
        30,
        "--seed",
        5,
        "--temperature",
        1.0,
        "--top-k",
        50,
        "--top-p",
        0.9,
        "--repetition-penalty",
        1.1,
    ]
    first, second = cli(*args), cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    stop = first.stdout[len("The king") :][4:7]
    cut = cli(*args, "--stop", stop)
    assert cut.stdout.rstrip("\n") == first.stdout[: first.stdout.index(stop, len("The king"))]


def test_interactive_mode_reads_prompts_line_by_line(stories_folder, cli):
    done = cli(
        "generate",
        stories_folder,
        "--max-new-tokens",
        8,
        "--temperature",
        0,
        stdin="Once upon a time\n\n" + "word " * 600 + "\nThe king\n",
    )
    assert done.returncode == 0
    assert len(done.stdout.strip().splitlines()) == 2  # two answers; the blank line is skipped
    assert done.stderr.count("shorten the prompt") == 1  # the oversized prompt is reported, then it goes on


def test_generate_errors_are_one_line(stories_path, stories_folder, tok512, cli):
    no_tokenizer = cli("generate", stories_path, "Hello")
    assert no_tokenizer.returncode == 2
    assert no_tokenizer.stderr.strip().count("\n") == 0 and "--tokenizer" in no_tokenizer.stderr
    with_tokenizer = cli("generate", stories_path, "Hello", "--tokenizer", tok512.path, "--max-new-tokens", 4)
    assert with_tokenizer.returncode == 0, with_tokenizer.stderr
    too_long = cli("generate", stories_folder, "word " * 600)
    assert too_long.returncode == 2 and too_long.stdout == ""
    assert "shorten the prompt" in too_long.stderr and "Traceback" not in too_long.stderr
    bad = cli("generate", stories_folder, "Hello", "--top-p", 2)
    assert bad.returncode == 2 and "top_p" in bad.stderr


def test_quantize_reports_perplexity_and_writes_a_loadable_folder(stories_folder, shared_data, tmp_path, cli):
    out = tmp_path / "int8"
    done = cli(
        "quantize",
        stories_folder,
        "-o",
        out,
        "--quantize",
        "int8",
        "--eval-text",
        shared_data / "corpora/tinyshakespeare/input.txt",
        "--eval-tokens",
        1024,
    )
    assert done.returncode == 0, done.stderr
    assert "perplexity on" in done.stdout and "delta" in done.stdout
    generated = cli("generate", out, "Once upon a time", "--max-new-tokens", 8)
    assert generated.returncode == 0, generated.stderr
    assert load_model(out)[0].quantization.method == "int8"  # the one loader reads quantized folders
    info = cli("info", out)
    assert info.returncode == 0 and "quantized:  int8" in info.stdout


def test_serve_answers_health_and_completions(stories_folder):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamafoundry.cli",
            "serve",
            str(stories_folder),
            "--port",
            str(port),
            "--model-name",
            "tiny",
            "--api-key",
            "k",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        reply = httpx.post(
            url + "/v1/completions",
            headers={"Authorization": "Bearer k"},
            timeout=60,
            json={"model": "tiny", "prompt": "Once", "max_tokens": 5},
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] is not None
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_without_a_tokenizer_is_a_user_error(stories_path: Path, cli):
    done = cli("serve", stories_path, "--port", 1)
    assert done.returncode == 2 and "--tokenizer" in done.stderr


def test_console_script_runs_generate(stories_folder):
    """The `llamafoundry` script pip installed beside this interpreter, importing the sources under test
    (an editable install elsewhere would otherwise win), prints the prompt and then the same greedy
    tokens the library generates in this process."""
    script = Path(sys.executable).with_name("llamafoundry")
    assert script.is_file(), f"no console script at {script}; pip install -e . into this environment"
    sources = Path(llamafoundry.__file__).resolve().parents[1]
    path = [str(sources), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    prompt = "Once upon a time"
    args = ["generate", str(stories_folder), prompt, "--max-new-tokens", "12", "--temperature", "0"]
    done = subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    model, tokenizer, _ = load_model(stories_folder)
    expected = Generator(model, tokenizer).generate([prompt], SamplingParams(max_new_tokens=12))[0]
    assert expected.tokens and expected.text.strip()  # the model did generate something to compare
    assert done.stdout == prompt + expected.text + "\n"


def test_each_command_decodes_with_its_defaults_and_the_flags_override_them(stories_folder):
    """generate: compile once it pays (auto), a 16-bit cache; serve: compiled, max-autotune for float
    weights on CPU; --compile and --kv-cache-dtype decide instead."""
    import torch

    from llamafoundry.cli import build_parser
    from llamafoundry.cli.inference import _generator

    def made(*argv: str, serving: bool = False) -> Generator:
        return _generator(build_parser().parse_args(list(argv)), serving)[0]

    generate = made("generate", str(stories_folder), "hi")
    assert generate.compile_policy == "auto" and not generate.compiled
    assert generate.kv_cache_dtype == torch.float16
    serve = made("serve", str(stories_folder), serving=True)
    assert serve.compiled and serve.compile_mode == "max-autotune"
    assert not made("serve", str(stories_folder), "--compile", "off", serving=True).compiled
    forced = made("generate", str(stories_folder), "hi", "--compile", "--kv-cache-dtype", "float32")
    assert forced.compiled and forced.compile_mode is None and forced.kv_cache_dtype == torch.float32
