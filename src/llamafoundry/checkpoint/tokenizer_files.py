"""The files that hold a tokenizer, and its chat template, in each model-folder format.

Each kind is written in its own files: a SentencePiece or tiktoken model as `tokenizer.model` (what
Meta ships), a `tokenizer.json` tokenizer as that file with its tokenizer_config.json. Hugging Face
folders get a tokenizer.json for every kind (exact; SentencePiece's built by hf_tokenizer.py) and the
chat template in tokenizer_config.json, where transformers and `load_chat_template` read it.
"""

from __future__ import annotations

from llamafoundry.checkpoint.hf_tokenizer import tokenizer_json
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import Tokenizer
from llamafoundry.tokenizer.bytelevel import LLAMA3_SPECIAL_TOKENS, ranks_from_json, write_ranks

File = bytes | dict  # raw bytes, or a JSON object


def tokenizer_files(tokenizer: Tokenizer, fmt: str, max_seq_len: int) -> dict[str, File]:
    """File name -> content of `tokenizer` in a folder of `fmt` ('native', 'hf' or 'meta')."""
    if fmt == "meta":  # Meta's folders hold tokenizer.model alone
        return {"tokenizer.model": _model_file(tokenizer)}
    if fmt == "hf":
        return hf_files(tokenizer, max_seq_len)
    if tokenizer.kind == "tokenizer.json":
        files: dict[str, File] = {
            "tokenizer.json": tokenizer.to_json(),
            "tokenizer_config.json": _config(tokenizer),
        }
        if len(tokenizer.eos_ids) > 1:
            files["generation_config.json"] = generation_config(tokenizer)
        return files
    files = {"tokenizer.model": tokenizer.serialized()}
    if tokenizer.chat_template is not None:  # SentencePiece: with the files AutoTokenizer reads
        sentencepiece = tokenizer.kind == "sentencepiece"
        files |= (
            hf_files(tokenizer, max_seq_len)
            if sentencepiece
            else {"tokenizer_config.json": _config(tokenizer)}
        )
    return files


def hf_files(tokenizer: Tokenizer, max_seq_len: int) -> dict[str, File]:
    """tokenizer.json and its configs; the class is the generic `PreTrainedTokenizerFast`: transformers'
    `LlamaTokenizer` would rebuild a SentencePiece pipeline from the vocabulary and lose its whitespace
    handling."""
    config = _config(tokenizer) | {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    files: dict[str, File] = {}
    if tokenizer.kind == "sentencepiece":
        files["tokenizer.model"] = tokenizer.serialized()
        files["tokenizer.json"] = tokenizer_json(tokenizer)
        config |= {"add_bos_token": True, "add_eos_token": False}
    else:
        files["tokenizer.json"] = tokenizer.to_json()
    files["tokenizer_config.json"] = config
    files["special_tokens_map.json"] = {k: v for k, v in config.items() if k.endswith("_token")}
    return files


def generation_config(tokenizer: Tokenizer) -> dict:
    """generation_config.json's ids: every id that ends generation (a list where there are several)."""
    eos = list(tokenizer.eos_ids)
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": eos if len(eos) > 1 else eos[0]}


def _config(tokenizer: Tokenizer) -> dict:
    """tokenizer_config.json's special tokens and chat template."""
    config = {
        "bos_token": tokenizer.id_to_piece(tokenizer.bos_id),
        "eos_token": tokenizer.id_to_piece(tokenizer.eos_id),
    }
    for key, token_id in (("unk_token", tokenizer.unk_id), ("pad_token", tokenizer.pad_id)):
        if token_id >= 0:
            config[key] = tokenizer.id_to_piece(token_id)
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    return config


def _model_file(tokenizer: Tokenizer) -> bytes:
    """tokenizer.model: SentencePiece's and tiktoken's own bytes; a tokenizer.json as tiktoken's rank
    file where it is Llama 3's (Meta's loader knows only that pipeline and its special tokens)."""
    if tokenizer.kind != "tokenizer.json":
        return tokenizer.serialized()
    name = str(tokenizer.path or "the tokenizer")
    ranks, specials = ranks_from_json(tokenizer.to_json(), name)
    if specials != LLAMA3_SPECIAL_TOKENS:
        raise UserError(
            f"{name} cannot be written as Meta's tokenizer.model: its special tokens are not Llama 3's; "
            "export to hf or native"
        )
    return write_ranks(ranks)
