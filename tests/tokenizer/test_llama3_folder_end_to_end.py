"""A Llama-3.2-shaped Hugging Face folder as transformers writes one (grouped-query attention, Meta's rope
scaling, a tied table, a byte-level BPE tokenizer.json with a chat template and several end-of-turn ids),
taken through `convert --to gguf` and run by llama.cpp: its tokens, its greedy decoding and its chat
template are ours."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch

from llamafoundry.checkpoint import load_model
from tests.helpers import assert_llama_cpp_decodes_as_we_do
from tests.tokenizer.conftest import LLAMA3_TEMPLATE, TEXTS, VOCAB


@pytest.fixture(scope="module")
def llama32_folder(llama3_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB + 256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,  # so that every band of this small head is scaled
        },
        tie_word_embeddings=True,
        initializer_range=0.2,  # logits far enough apart that greedy picks are no near-ties
        bos_token_id=VOCAB,
        eos_token_id=[VOCAB + 1, VOCAB + 9],
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("Llama-3.2-tiny")
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llama3_files["json"] / name, folder / name)
    return folder


def test_the_folder_loads_with_its_tokenizer_shape_and_end_of_turn_ids(llama32_folder: Path) -> None:
    model, tok, cfg = load_model(llama32_folder)
    assert cfg.tie_embeddings and cfg.rope_scaling is not None and cfg.kv_heads == 2
    assert model.output.weight is model.tok_embeddings.weight
    assert tok.kind == "tokenizer.json" and tok.bos_id == VOCAB
    assert set(tok.eos_ids) >= {VOCAB + 1, VOCAB + 9}  # <|end_of_text|> and <|eot_id|>


def test_convert_to_gguf_carries_the_bpe_vocabulary_and_the_chat_template(
    llama32_folder: Path, tmp_path: Path, cli
) -> None:
    out = tmp_path / "tiny.gguf"
    done = cli("convert", llama32_folder, "-o", out, "--to", "gguf")
    assert done.returncode == 0, done.stderr
    reader = gguf.GGUFReader(out)
    fields = {name: reader.fields[name] for name in reader.fields}

    def text(key: str) -> str:
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode()

    assert text("tokenizer.ggml.model") == "gpt2" and text("tokenizer.ggml.pre") == "llama-bpe"
    assert text("tokenizer.chat_template") == LLAMA3_TEMPLATE
    assert text("general.name") == llama32_folder.name
    assert "output.weight" not in {t.name for t in reader.tensors}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (llama_cpp) is not installed: pip install 'llamafoundry[bench]'",
)
def test_llama_cpp_tokenizes_and_decodes_the_converted_folder_as_we_do(llama32_folder: Path, tmp_path: Path):
    from llama_cpp import Llama

    model, tok, _ = load_model(llama32_folder)
    path = tmp_path / "tiny.gguf"
    assert_llama_cpp_decodes_as_we_do(model, tok, path)
    vocab_only = Llama(model_path=str(path), vocab_only=True, verbose=False)
    for sample in TEXTS:
        assert vocab_only.tokenize(sample.encode(), add_bos=True, special=True) == tok.encode(sample)
    assert json.loads(json.dumps(vocab_only.metadata))["tokenizer.chat_template"] == LLAMA3_TEMPLATE
