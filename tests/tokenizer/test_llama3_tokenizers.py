"""Llama 3's two tokenizer files, read by our `load_tokenizer`, encode exactly as their own libraries
(`tokenizers`, `tiktoken`) and transformers' AutoTokenizer do, and survive every export format."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil

import gguf
import pytest
import tiktoken
import tokenizers

from llamafoundry.checkpoint import export, load_model
from llamafoundry.checkpoint.hf import save_hf
from llamafoundry.errors import UserError
from llamafoundry.inference.detokenize import IncrementalDecoder
from llamafoundry.tokenizer import load_tokenizer
from llamafoundry.tokenizer.bytelevel import LLAMA3_PATTERN, LLAMA3_SPECIAL_TOKENS
from tests.helpers import random_model
from tests.tokenizer.conftest import TEXTS, VOCAB, tiny_config


def _tiktoken_reference(path) -> tiktoken.Encoding:
    """Meta's llama3 Tokenizer's encoding, built as Meta's tokenizer.py builds it."""
    ranks = {
        base64.b64decode(t): int(r) for t, r in (line.split() for line in path.read_bytes().splitlines())
    }
    specials = {token: len(ranks) + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)}
    return tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


def test_both_files_encode_as_tokenizers_tiktoken_and_transformers(llama3_files):
    from transformers import AutoTokenizer

    ours_json, ours_tiktoken = load_tokenizer(llama3_files["json"]), load_tokenizer(llama3_files["tiktoken"])
    assert (ours_json.kind, ours_tiktoken.kind) == ("tokenizer.json", "tiktoken")
    backend = tokenizers.Tokenizer.from_file(str(llama3_files["json"] / "tokenizer.json"))
    reference = _tiktoken_reference(llama3_files["tiktoken"])
    hf = AutoTokenizer.from_pretrained(llama3_files["json"])
    for tok in (ours_json, ours_tiktoken):
        assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (VOCAB + 256, VOCAB, VOCAB + 1)
        assert VOCAB + 9 in tok.eos_ids  # <|eot_id|> ends generation too
    for text in TEXTS:
        ids = backend.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text, allowed_special="all")
        assert ours_json.encode(text) == ours_tiktoken.encode(text) == [VOCAB, *ids]
        assert ours_json.encode(text) == hf(text)["input_ids"]
        assert ours_json.decode(ids) == ours_tiktoken.decode(ids) == text
    # Special tokens in the text are single ids; a byte-level vocabulary has no unknown token.
    assert ours_json.encode("<|eot_id|>", bos=False) == [VOCAB + 9]


def test_streamed_text_is_whole_characters_when_a_token_ends_inside_one(llama3_files):
    for tok in (load_tokenizer(llama3_files["json"]), load_tokenizer(llama3_files["tiktoken"])):
        text = "emoji 🦙👩‍👩‍👧 and 日本語, then done"
        ids = tok.encode(text, bos=False)
        assert any("\ufffd" in tok.decode([i]) for i in ids)  # the case under test: a split character
        decoder = IncrementalDecoder(tok, tok.encode("Say:"))
        pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
        assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_a_folder_with_only_tokenizer_json_has_a_tokenizer(llama3_files, tmp_path, cli):
    folder = save_hf(tmp_path / "hf", random_model(tiny_config()))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llama3_files["json"] / name, folder / name)
    done = cli("info", folder)
    assert done.returncode == 0, done.stderr
    assert f"tokenizer:  {VOCAB + 256} pieces, bos {VOCAB}, eos {VOCAB + 1}" in done.stdout


@pytest.mark.parametrize("source", ["json", "tiktoken"])
@pytest.mark.parametrize(("fmt", "kind"), [("native", None), ("hf", "tokenizer.json"), ("meta", "tiktoken")])
def test_every_folder_format_carries_the_tokenizer(llama3_files, tmp_path, source, fmt, kind):
    from transformers import AutoTokenizer

    tok = load_tokenizer(llama3_files[source])
    out = export(tmp_path / fmt, random_model(tiny_config()), tok, fmt)
    _, loaded, _ = load_model(out)
    assert loaded.kind == (kind or tok.kind)  # native keeps the kind it got
    assert set(loaded.eos_ids) >= {VOCAB + 1, VOCAB + 9}
    for text in TEXTS:
        assert loaded.encode(text) == tok.encode(text)
    if fmt == "hf":
        hf = AutoTokenizer.from_pretrained(out)
        assert [hf(text)["input_ids"] for text in TEXTS] == [tok.encode(text) for text in TEXTS]
        stop = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
        assert stop[0] == VOCAB + 1 and VOCAB + 9 in stop  # transformers' generate stops at end of turn


def test_meta_export_refuses_a_tokenizer_json_that_is_not_llama3s(llama3_files, tmp_path):
    content = json.loads((llama3_files["json"] / "tokenizer.json").read_text())
    content["added_tokens"][5]["content"] = "<|my_token|>"
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(content))
    shutil.copy(llama3_files["json"] / "tokenizer_config.json", folder)
    with pytest.raises(UserError, match="not Llama 3's; export to hf or native"):
        export(tmp_path / "meta", random_model(tiny_config()), load_tokenizer(folder), "meta")
    assert not (tmp_path / "meta").exists()


@pytest.mark.parametrize("source", ["json", "tiktoken"])
def test_gguf_holds_the_byte_level_vocabulary_merges_and_template(llama3_files, tmp_path, source):
    tok = load_tokenizer(llama3_files[source])
    reader = gguf.GGUFReader(export(tmp_path / "m.gguf", random_model(tiny_config()), tok, "gguf"))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "llama-bpe"
    assert field("tokenizer.ggml.tokens") == [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    expected = tokenizers.Tokenizer.from_file(str(llama3_files["json"] / "tokenizer.json"))
    assert field("tokenizer.ggml.tokens")[:VOCAB] == [expected.id_to_token(i) for i in range(VOCAB)]
    merges = json.loads(expected.to_str())["model"]["merges"]
    assert field("tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    types = field("tokenizer.ggml.token_type")
    assert types[VOCAB + 9] == gguf.TokenType.CONTROL and types[300] == gguf.TokenType.NORMAL
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (VOCAB, VOCAB + 1)
    if source == "json":
        assert field("tokenizer.chat_template") == tok.chat_template


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (llama_cpp) is not installed: pip install 'llamafoundry[bench]'",
)
@pytest.mark.parametrize("source", ["json", "tiktoken"])
def test_llama_cpp_tokenizes_our_gguf_as_we_do(llama3_files, tmp_path, source):
    from llama_cpp import Llama

    tok = load_tokenizer(llama3_files[source])
    path = export(tmp_path / "m.gguf", random_model(tiny_config()), tok, "gguf")
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok.encode(text)


def test_bad_tokenizer_files_are_user_errors(llama3_files, tmp_path):
    with pytest.raises(UserError, match="holds no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "nothing"}}')
    with pytest.raises(UserError, match="not a tokenizer.json that tokenizers can load"):
        load_tokenizer(tmp_path)
    lines = (llama3_files["tiktoken"]).read_bytes().splitlines()
    (tmp_path / "tokenizer.model").write_bytes(b"\n".join([*lines[:5], b"not-base64! 5"]))
    with pytest.raises(UserError, match="neither a SentencePiece model nor a tiktoken rank file"):
        load_tokenizer(tmp_path / "tokenizer.model")
    shutil.copy(llama3_files["json"] / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(UserError, match="no bos_token in its tokenizer_config.json"):
        load_tokenizer(tmp_path / "tokenizer.json")  # no tokenizer_config.json beside it


def test_token_shards_say_they_need_a_sentencepiece_model(llama3_files, tmp_path):
    from llamafoundry.data.shards import build_shards

    text = tmp_path / "book.txt"
    text.write_text("Some text to tokenize.\n")
    with pytest.raises(
        UserError, match="is a tiktoken tokenizer; token shards are built with a SentencePiece"
    ):
        build_shards({"books": [text]}, llama3_files["tiktoken"], tmp_path / "tokens")
    assert not (tmp_path / "tokens").exists()
