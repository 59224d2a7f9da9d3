"""Inference commands: `generate` (one prompt, or interactive from stdin; `--chat` through the model's
chat template), `serve`, `quantize`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from llamafoundry.cli.options import (
    MODEL_HELP,
    add_load_options,
    add_model,
    add_output,
    check_at_least,
    load,
    output_of,
    warn_deprecated,
)
from llamafoundry.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="generate text from a model (no prompt: read prompts from stdin)"
    )
    add_model(p)
    p.add_argument("prompt", nargs="?", default=None, help="the prompt; leave out for interactive mode")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL's penalty, e.g. 1.1 (1: off)")
    p.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument(
        "--chat",
        action="store_true",
        help="the prompt is a user message, rendered with the model's chat template; no prompt: a chat "
        "on stdin that keeps the history",
    )
    _chat_template_option(p)
    _model_options(p)
    p.set_defaults(func=cmd_generate, keeps_freed_memory=True)

    p = subparsers.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model-name", default=None, help="the name clients ask for (default: the folder's name)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LLAMAFOUNDRY_API_KEY"),
        help="require this bearer key (default: $LLAMAFOUNDRY_API_KEY; unset: no key)",
    )
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--max-tokens-limit", type=int, default=1024, help="ceiling on a request's max_tokens")
    p.add_argument(
        "--max-concurrent", type=int, default=64, help="requests in flight before 429 (default 64)"
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="largest request body; more gets 413 (default: 32 per token of context + 64 KiB)",
    )
    p.add_argument(
        "--moderation",
        metavar="SCORER[:THRESHOLD]",
        default=None,
        help="score completions with a toxicity scorer (profanity, hf:FOLDER, perspective) and withhold "
        "those at the threshold (default 0.5): finish_reason content_filter; off by default",
    )
    _chat_template_option(p)
    _model_options(p)
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("quantize", help="write a weight-only int8 / int4 copy of a model")
    add_model(p, MODEL_HELP.replace("quantized, ", ""))
    add_output(p, "output folder", required=True, old_positional=True)
    add_load_options(p, quantize=False)
    p.add_argument(
        "--quantize",
        choices=("int8", "int4"),
        default="int8",
        help="int8 per channel (default) or int4 grouped",
    )
    p.add_argument("--group-size", type=int, default=128, help="int4 group size: 32, 64, 128 or 256")
    p.add_argument("--method", choices=("int8", "int4"), default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--eval-text",
        type=Path,
        default=None,
        help="a held-out text file: report the perplexity before and after quantizing",
    )
    p.add_argument(
        "--eval-tokens", type=int, default=16384, help="tokens of --eval-text to score (default 16384)"
    )
    p.add_argument(
        "--calibration-text",
        type=Path,
        default=None,
        help="a text file like the model's training data: int4 by GPTQ on the layers' inputs over it "
        "(default: round-to-nearest, no data needed)",
    )
    p.add_argument(
        "--calibration-tokens",
        type=int,
        default=32768,
        help="tokens of --calibration-text to run through the model (default 32768)",
    )
    p.set_defaults(func=cmd_quantize, keeps_freed_memory=True)


def _chat_template_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chat-template",
        type=Path,
        default=None,
        help="a Jinja chat template file (default: the model folder's, else a plain transcript)",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    add_load_options(p)
    p.add_argument(
        "--max-seq-len", type=int, default=None, help="context for prompt + output (default: model's)"
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="on",
        choices=("auto", "on", "off"),
        default=None,
        help="torch.compile the decode step: on, off or auto (default: generate compiles once a long or "
        "repeated generation pays for the compilation; serve compiles at start)",
    )
    p.add_argument(
        "--compile-mode",
        choices=("default", "max-autotune"),
        default=None,
        help="max-autotune compiles longer for faster batched decoding (default: serve takes it for float "
        "weights on CPU, generate does not)",
    )
    p.add_argument(
        "--kv-cache-dtype",
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="keys and values in the cache (default: 16 bits, float16 or the model's 16-bit dtype, as "
        "llama.cpp keeps them); float32 gives exact logits for twice the bytes decoding reads",
    )


def _generator(args: argparse.Namespace, serving: bool = False):
    """(Generator, chat template) of the command's model, with the command's decoding defaults (see
    `--compile`): the generator also stops at the end-of-turn token of the template (Llama 3's <|eot_id|>)."""
    import torch

    from llamafoundry.inference.chat import end_of_turn
    from llamafoundry.inference.generate import Generator

    if args.max_seq_len is not None and args.max_seq_len < 2:
        raise UserError(f"--max-seq-len must be at least 2, got {args.max_seq_len}")
    model, tokenizer, _ = load(args)
    template = _chat_template(args, tokenizer)
    options = {
        "max_seq_len": args.max_seq_len,
        "kv_cache_dtype": getattr(torch, args.kv_cache_dtype) if args.kv_cache_dtype else None,
        "stop_ids": end_of_turn(template, tokenizer) if tokenizer is not None else (),
    }
    if args.compile_mode is not None:  # "default" is torch.compile's own mode
        options["compile_mode"] = None if args.compile_mode == "default" else args.compile_mode
    compile = args.compile or ("on" if serving or args.compile_mode is not None else "auto")
    if compile == "on" and serving:
        return Generator.for_serving(model, tokenizer, **options), template
    policy = {"on": True, "off": False, "auto": "auto"}[compile]
    return Generator(model, tokenizer, compile=policy, **options), template


def _chat_template(args: argparse.Namespace, tokenizer):
    """--chat-template's file, else the model folder's template, else the tokenizer's (a --tokenizer
    folder's), else the plain transcript."""
    from llamafoundry.checkpoint.hub import resolve
    from llamafoundry.inference.chat import ChatTemplate, load_chat_template

    if args.chat_template is not None:
        if not args.chat_template.is_file():
            raise UserError(f"chat template {args.chat_template} not found; give a Jinja template file")
        return ChatTemplate(jinja=args.chat_template.read_text(encoding="utf-8"), stop=())
    folder = resolve(args.model)  # a hub id's cached snapshot
    if folder.is_dir() and load_chat_template(folder).jinja is not None:
        return load_chat_template(folder)
    if tokenizer is not None and tokenizer.chat_template is not None:
        return ChatTemplate(jinja=tokenizer.chat_template, stop=())
    return ChatTemplate()


def cmd_generate(args: argparse.Namespace) -> None:
    from llamafoundry.inference.sampling import SamplingParams

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        seed=args.seed,
    )
    generator, template = _generator(args)
    if generator.tokenizer is None:
        raise UserError(
            f"{args.model} has no tokenizer, so prompts cannot be encoded; "
            "pass --tokenizer PATH to its tokenizer.model or tokenizer.json"
        )
    if args.chat:
        _chat(
            generator,
            template,
            args.prompt,
            dataclasses.replace(params, stop=params.stop + template.stop),
            args.stream,
        )
        return
    if args.prompt is not None:
        _complete(generator, args.prompt, params, args.stream, echo=True)
        return
    for prompt in _stdin_lines("Enter a prompt per line; Ctrl-D ends."):
        try:
            _complete(generator, prompt, params, args.stream, echo=False)
        except UserError as exc:  # one bad prompt does not end the session
            print(f"llamafoundry generate: error: {exc}", file=sys.stderr)


def _stdin_lines(hint: str) -> Iterator[str]:
    """The non-blank lines of stdin, with a prompt on the terminal when it is one."""
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):
        # Bytes that are not UTF-8 reach the tokenizer as surrogates, which reports that one prompt.
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        print(hint, file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


def _chat(generator, template, prompt: str | None, params, stream: bool) -> None:
    """One reply to `prompt` as a user message; no prompt: a chat on stdin, each reply rendered after
    the whole conversation so far."""
    from llamafoundry.inference.chat import render_chat

    history: list[dict] = []
    for line in [prompt] if prompt is not None else _stdin_lines("Chat: a message per line; Ctrl-D ends."):
        messages = [*history, {"role": "user", "content": line}]
        try:
            ids = render_chat(messages, template, generator.tokenizer)
            generator.check_prompt(ids)
        except UserError as exc:
            if prompt is not None:
                raise
            print(f"llamafoundry generate: error: {exc}", file=sys.stderr)  # the chat goes on
            continue
        reply = _print_completion(generator, ids, params, stream)
        history = [*messages, {"role": "assistant", "content": reply}]


def _complete(generator, prompt: str, params, stream: bool, echo: bool) -> None:
    """Print the completion of one prompt (after the prompt itself when `echo`)."""
    ids = generator.encode(prompt)
    generator.check_prompt(ids)  # before anything is printed
    if echo:
        print(prompt, end="", flush=True)
    _print_completion(generator, ids, params, stream)


def _print_completion(generator, ids: list[int], params, stream: bool) -> str:
    """Print the completion of `ids` and a newline; return its text."""
    if stream:
        parts = []
        for events in generator.stream([ids], params):
            for event in events:
                print(event.text, end="", flush=True)
                parts.append(event.text)
        text = "".join(parts)
    else:
        text = generator.generate([ids], params)[0].text
        print(text, end="")
    print(flush=True)
    return text


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from llamafoundry.inference.server import Moderation, Server, ServerLimits, check_api_key, create_app
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'llamafoundry[serve]'") from None
    from llamafoundry.checkpoint.hub import is_hub_id
    from llamafoundry.inference.sampling import SamplingParams

    check_api_key(args.api_key)  # before the model loads
    moderation = Moderation.parse(args.moderation) if args.moderation else None

    for name in ("max_batch", "max_tokens_limit", "max_concurrent"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 1 <= args.port <= 65535:  # 0 would listen on a port the printed address does not name
        raise UserError(f"--port must be 1 to 65535, got {args.port}")
    generator, template = _generator(args, serving=True)
    limits = ServerLimits(
        max_tokens=args.max_tokens_limit,
        max_concurrent=args.max_concurrent,
        max_batch=args.max_batch,
        max_request_bytes=args.max_request_bytes,
    )
    if generator.compiled:  # compile (and pack the weights) now, not in the first client's request
        print("compiling the decode step (other batch sizes compile when they first come)", file=sys.stderr)
        generator.reserve(args.max_batch)  # the cache every batch shares: a frozen graph guards on it
        generator.generate([[0, 0]], SamplingParams(max_new_tokens=2, ignore_eos=True))
    # A hub id names itself (as vLLM serves it); a folder by its name.
    name = args.model_name or (args.model if is_hub_id(args.model) else Path(args.model).name)
    server = Server(
        generator, name, api_key=args.api_key, limits=limits, chat_template=template, moderation=moderation
    )
    print(
        f"serving {name} on http://{args.host}:{args.port}/v1 (context {generator.max_seq_len} tokens)",
        file=sys.stderr,
    )
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level="warning")


def cmd_quantize(args: argparse.Namespace) -> None:
    from llamafoundry.checkpoint import check_export, save_model
    from llamafoundry.inference.quantize import QuantConfig, quantize_model, weight_bytes

    if args.method is not None:
        warn_deprecated("--method", "--quantize")
        args.quantize = args.method
    config = QuantConfig(args.quantize, args.group_size)
    check_at_least(args, 1, "eval_tokens")
    check_at_least(args, 2, "calibration_tokens")
    if args.calibration_text is not None and config.method != "int4":
        raise UserError("--calibration-text calibrates int4 (GPTQ); add --quantize int4")
    output = output_of(args)
    if output.resolve() == Path(args.model).resolve():
        raise UserError("the output folder is the source folder; choose another output path")
    check_export(output, overwrite=args.overwrite)  # before the model is loaded
    model, tokenizer, _ = load(args, quantize=None)
    calibration = _calibration(args, tokenizer, model.cfg.max_seq_len)
    eval_ids = _eval_ids(args, tokenizer)
    before = _perplexity(model, eval_ids) if eval_ids else None
    size_before = weight_bytes(model)
    quantize_model(model, config, calibration)
    save_model(output, model, tokenizer, overwrite=args.overwrite)
    print(
        f"wrote {config.method} model to {output} (weights read per token: {size_before / 2**20:.1f} MiB -> "
        f"{weight_bytes(model) / 2**20:.1f} MiB)"
    )
    if eval_ids:
        after = _perplexity(model, eval_ids)
        method = f"{config.method} {'GPTQ' if calibration else 'RTN'}" if config.method == "int4" else "int8"
        print(
            f"perplexity on {args.eval_text} ({len(eval_ids)} tokens): float {before:.3f}, {method} "
            f"{after:.3f}, delta {after - before:+.3f} ({(after / before - 1) * 100:+.2f}%)"
        )


def _eval_ids(args: argparse.Namespace, tokenizer) -> list[int] | None:
    if args.eval_text is None:
        return None
    if tokenizer is None:
        raise UserError("--eval-text needs a tokenizer and the model has none; pass --tokenizer")
    if not args.eval_text.is_file():
        raise UserError(f"--eval-text {args.eval_text} not found; give a text file")
    text = args.eval_text.read_text(encoding="utf-8", errors="replace")
    return tokenizer.encode(text[: args.eval_tokens * 16], bos=True)[: args.eval_tokens]


def _calibration(args: argparse.Namespace, tokenizer, window: int) -> list | None:
    """--calibration-text as sequences of at most `window` token ids (the model's context)."""
    import torch

    path = args.calibration_text
    if path is None:
        return None
    if tokenizer is None:
        raise UserError("--calibration-text needs a tokenizer and the model has none; pass --tokenizer")
    if not path.is_file():
        raise UserError(f"--calibration-text {path} not found; give a text file")
    try:
        data = path.read_bytes()[: args.calibration_tokens * 16]
    except OSError as e:
        raise UserError(f"cannot read --calibration-text {path}: {e.strerror}") from None
    if b"\x00" in data:  # text has no NUL bytes; a checkpoint or archive does
        raise UserError(f"--calibration-text {path} is a binary file; give a text file")
    ids = tokenizer.encode(data.decode("utf-8", errors="replace"), bos=True)[: args.calibration_tokens]
    if len(ids) < 2:
        raise UserError(f"--calibration-text {path} is too short to calibrate on; give more text")
    return [torch.tensor(ids[i : i + window]) for i in range(0, len(ids), window)]


def _perplexity(model, ids: list[int]) -> float:
    from llamafoundry.inference.perplexity import perplexity

    return perplexity(model, ids, progress=True)
