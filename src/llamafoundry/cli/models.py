"""Model commands: `presets` (the model zoo), `info`, `convert`."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamafoundry.cli.options import (
    FILES_ONLY_DEVICE_HELP,
    add_load_options,
    add_model,
    add_output,
    check_at_least,
    load,
    output_of,
)
from llamafoundry.config import PRESETS, format_params, get_preset, num_params
from llamafoundry.errors import UserError

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # checkpoint.common.DTYPES, named without importing torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list the model presets (the model zoo)")
    p.set_defaults(func=cmd_presets)

    p = subparsers.add_parser("info", help="describe a model folder, llama2.c file or preset")
    add_model(p)
    add_load_options(p, device_help=FILES_ONLY_DEVICE_HELP)
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("convert", help="convert a model between folder formats")
    add_model(p)
    add_output(p, "output folder (or .gguf file with --to gguf)", required=True, old_positional=True)
    p.add_argument("--to", default="native", help="output format: native, meta, hf, gguf (default native)")
    p.add_argument("--shards", type=int, default=1, help="model-parallel shards for --to meta (default 1)")
    p.add_argument("--max-seq-len", type=int, default=None, help="context length, where the source lacks it")
    add_load_options(
        p,
        device_help=FILES_ONLY_DEVICE_HELP,
        dtype_help="float32, bfloat16 or float16 (default: as loaded); for --to gguf: f32 (default), f16 "
        "q8_0 or q4_0; with --quantize the folder is our native one",
    )
    p.set_defaults(func=cmd_convert)


def cmd_presets(args: argparse.Namespace) -> None:
    print(
        f"{'preset':<13} {'params':>9} {'dim':>6} {'layers':>6} {'heads':>5} {'kv':>4} {'ffn':>6} "
        f"{'vocab':>6} {'context':>7}"
    )
    for name, cfg in PRESETS.items():
        print(
            f"{name:<13} {format_params(num_params(cfg)):>9} {cfg.dim:>6} {cfg.n_layers:>6} {cfg.n_heads:>5} "
            f"{cfg.kv_heads:>4} {cfg.ffn_hidden_dim:>6} {cfg.vocab_size:>6} {cfg.max_seq_len:>7}"
        )


def cmd_info(args: argparse.Namespace) -> None:
    if args.model in PRESETS and not Path(args.model).exists():
        # From the config alone, without torch: even an empty llama-65b takes seconds to build.
        fmt, cfg, tokenizer = "preset", get_preset(args.model), _tokenizer_for(args)
        if args.dtype not in (None, *DTYPE_NAMES):
            raise UserError(f"unknown dtype {args.dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
        dtypes, quantization = [args.dtype or "float32"], args.quantize
    else:
        from llamafoundry.checkpoint import detect_format

        fmt = detect_format(args.model)
        model, tokenizer, cfg = load(args, device=args.device)
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        quantization = getattr(getattr(model, "quantization", None), "method", None)
    print(f"model:      {args.model}")
    print(f"format:     {fmt}")
    print(f"parameters: {num_params(cfg):,} ({format_params(num_params(cfg))})")
    print(f"dtype:      {', '.join(dtypes)}")
    if quantization is not None:
        print(f"quantized:  {quantization}")
    for key, value in cfg.to_dict().items():
        print(f"  {key:<20} {value}")
    print(f"  {'ffn_hidden_dim':<20} {cfg.ffn_hidden_dim}")
    if tokenizer is None:
        print("tokenizer:  none")
    else:
        print(f"tokenizer:  {tokenizer.vocab_size} pieces, bos {tokenizer.bos_id}, eos {tokenizer.eos_id}")


def _tokenizer_for(args: argparse.Namespace):
    """--tokenizer's tokenizer, or None."""
    from llamafoundry.tokenizer import load_tokenizer

    return load_tokenizer(args.tokenizer) if args.tokenizer is not None else None


def cmd_convert(args: argparse.Namespace) -> None:
    from llamafoundry.checkpoint import check_export, export

    if args.shards < 1:
        raise UserError(f"--shards must be at least 1, got {args.shards}")
    check_at_least(args, 1, "max_seq_len")
    output = output_of(args)
    if output.resolve() == Path(args.model).resolve():
        raise UserError("the output folder is the source folder; choose another output path")
    check_export(output, args.to, overwrite=args.overwrite)  # before the model is loaded
    # --dtype is the written dtype (GGUF has its own names), so the model loads as stored.
    model, tokenizer, _ = load(args, device=args.device, dtype=None, max_seq_len=args.max_seq_len)
    export(
        output,
        model,
        tokenizer,
        args.to,
        dtype=args.dtype,
        shards=args.shards,
        overwrite=args.overwrite,
        name=_model_name(args.model),
        progress=True,
    )
    print(f"wrote {args.to} model to {output}")


def _model_name(model: str) -> str:
    """What a converted model is called (GGUF's general.name): the source folder's name, a file's name
    without its suffix, or the preset's."""
    path = Path(model)
    if not path.exists():
        return model
    path = path.resolve()  # "." is a folder with a name
    return path.stem if path.is_file() else path.name
