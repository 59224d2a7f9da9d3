"""llama.cpp's GGUF file: the model's hyperparameters, its vocabulary (SentencePiece, or Llama 3's byte-level
BPE), its chat template and its tensors.

Written with the `gguf` package (llama.cpp's own writer), following llama.cpp's `convert_hf_to_gguf.py`
for the LLaMA architecture: llama.cpp rotates adjacent channel pairs as Meta's code does, so our wq/wk
go in unpermuted (the converter undoes Hugging Face's permutation to get there). Norms stay float32, as
llama.cpp requires; matrices take the chosen type (F32, F16 or Q8_0, the last falling back to F16 for
a tensor whose rows are not whole 32-value blocks, again as the converter does). A tied model has no
output.weight: llama.cpp then scores with token_embd. Llama 3.1's rope scaling travels as the
converter's `rope_freqs` tensor, the factor by which each rotary frequency is divided.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import torch

from llamafoundry import fileio
from llamafoundry.checkpoint.common import is_gguf_file, model_tensors
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer, rope_freqs
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.tokenizer.bytelevel import llama3_pre_tokenizer

# Our (Meta's) tensor names -> llama.cpp's; inside blocks, "layers.N.x" -> "blk.N.y".
_TOP = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}
_BLOCK = {
    "attention_norm.weight": "attn_norm.weight",
    "attention.wq.weight": "attn_q.weight",
    "attention.wk.weight": "attn_k.weight",
    "attention.wv.weight": "attn_v.weight",
    "attention.wo.weight": "attn_output.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
}
Q = gguf.GGMLQuantizationType
# Output type name -> (type of the matrices, llama.cpp's file type).
GGUF_TYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
_TORCH_NAMES = {"float32": "f32", "float16": "f16"}


def gguf_name(name: str) -> str:
    """llama.cpp's name for one of our state-dict tensors."""
    if name in _TOP:
        return _TOP[name]
    _, layer, rest = name.split(".", 2)
    return f"blk.{layer}.{_BLOCK[rest]}"


def parse_gguf_type(name: str | None) -> str:
    """'f32', 'f16' or 'q8_0' from a user's choice (torch dtype names accepted)."""
    key = (name or "f32").lower()
    key = _TORCH_NAMES.get(key, key)
    if key not in GGUF_TYPES:
        raise UserError(f"GGUF export supports {', '.join(GGUF_TYPES)} (got {name!r}); choose one of them")
    return key


def save_gguf(
    path: str | os.PathLike,
    model: Transformer,
    tokenizer: Tokenizer | None,
    dtype: str | None = None,
    name: str | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write `model` and its tokenizer as one GGUF file at `path`, atomically; an existing file is
    replaced only with `overwrite`, and only a GGUF file. `name` (general.name) defaults to the file's
    name without .gguf; `progress` shows a bar of the tensors."""
    key = parse_gguf_type(dtype)
    if tokenizer is None:
        raise UserError(
            "GGUF files carry the tokenizer and this model has none; pass --tokenizer with its tokenizer file"
        )
    cfg = model.cfg
    if tokenizer.vocab_size != cfg.vocab_size:
        raise UserError(
            f"the tokenizer has {tokenizer.vocab_size} pieces but the model {cfg.vocab_size}; "
            "llama.cpp needs them equal: pass the model's own tokenizer"
        )
    matrix_type, file_type = GGUF_TYPES[key]
    path = Path(path)
    with fileio.output_file(path, overwrite=overwrite, recognise=is_gguf_file) as tmp:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        _write_hparams(writer, model, name or path.stem, file_type)
        _write_vocab(writer, tokenizer)
        if cfg.rope_scaling is not None:
            writer.add_tensor(
                gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", rope_freq_factors(cfg)
            )
        for ours, tensor in model_tensors(model, progress=progress):
            data_type, data = _encode(tensor, matrix_type)
            writer.add_tensor(gguf_name(ours), data, raw_dtype=data_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def rope_freq_factors(cfg: ModelConfig) -> np.ndarray:
    """llama.cpp's `rope_freqs`: per rotary frequency, the factor that divides it (float32, head_dim / 2)."""
    plain = rope_freqs(cfg.head_dim, cfg.rope_theta)
    return (plain / rope_freqs(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)).numpy()


def _write_hparams(
    writer: gguf.GGUFWriter, model: Transformer, name: str, file_type: gguf.LlamaFileType
) -> None:
    cfg = model.cfg
    writer.add_name(name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.ffn_hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_vocab(writer: gguf.GGUFWriter, tokenizer: Tokenizer) -> None:
    """The vocabulary as llama.cpp's tokenizer of its kind reads it, its special ids and chat template."""
    if tokenizer.kind == "sentencepiece":
        _write_sentencepiece(writer, tokenizer)
    else:
        _write_bpe(writer, tokenizer)
    for kind, token_id in (
        ("bos", tokenizer.bos_id),
        ("eos", tokenizer.eos_id),
        ("unk", tokenizer.unk_id),
        ("pad", tokenizer.pad_id),
    ):
        if token_id >= 0:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(True)  # as our Tokenizer.encode and Meta's reference do
    writer.add_add_eos_token(False)
    if tokenizer.chat_template is not None:
        writer.add_chat_template(tokenizer.chat_template)


def _write_bpe(writer: gguf.GGUFWriter, tokenizer: Tokenizer) -> None:
    """A byte-level BPE as llama.cpp's 'gpt2' tokenizer reads it: byte-level tokens, merges, and the
    pre-tokenizer by llama.cpp's name for it ('llama-bpe': Llama 3's regex, the only one we write)."""
    content = tokenizer.to_json()
    if json.dumps(content.get("pre_tokenizer"), sort_keys=True) != json.dumps(
        llama3_pre_tokenizer(), sort_keys=True
    ):
        raise UserError(
            "GGUF export writes byte-level BPE tokenizers with Llama 3's pre-tokenizer only; this "
            "tokenizer.json has another: export to hf or native"
        )
    special = tokenizer.special_tokens.values()
    added = {t["id"] for t in content.get("added_tokens", [])}
    types = [
        gguf.TokenType.CONTROL
        if i in special
        else gguf.TokenType.USER_DEFINED
        if i in added
        else gguf.TokenType.NORMAL
        for i in range(tokenizer.vocab_size)
    ]
    merges = content["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list([tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)])
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])


def _write_sentencepiece(writer: gguf.GGUFWriter, tokenizer: Tokenizer) -> None:
    """The SentencePiece vocabulary as llama.cpp's 'llama' tokenizer reads it (pieces, scores, types)."""
    sp = tokenizer.sp
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)


def _encode(tensor: torch.Tensor, matrix_type: Q) -> tuple[Q, np.ndarray]:
    """(GGML type, data) of one tensor: vectors in F32, matrices in `matrix_type` (Q8_0 and Q4_0 fall back to F16 where rows are not whole blocks)."""
    data = tensor.detach().float().cpu().contiguous().numpy()
    if data.ndim <= 1 or matrix_type == Q.F32:
        return Q.F32, data
    try:
        return matrix_type, gguf.quants.quantize(data, matrix_type)
    except gguf.QuantError:
        return Q.F16, gguf.quants.quantize(data, Q.F16)
