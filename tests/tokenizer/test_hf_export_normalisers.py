"""The tokenizer.json of our HF export encodes as SentencePiece does for every normaliser option the
model's proto records, in `tokenizers` and in transformers."""

from __future__ import annotations

import io
import itertools
import json

import pytest
import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_model_pb2

from llamafoundry.checkpoint import export
from llamafoundry.checkpoint.hf_tokenizer import tokenizer_json
from llamafoundry.config import ModelConfig
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import LLAMA_TRAINER_OPTIONS, SentencePieceTokenizer, load_tokenizer
from tests.helpers import random_model

LINES = [f"the quick brown fox {i} jumps  over the lazy dog" for i in range(200)]
LINES += ["def f(x):\n    return x", "Ｆｕｌｌ ｗｉｄｔｈ ① naïve café", "  spaced   out  "] * 10
TEXTS = [
    "a  b",
    "  leading and trailing  ",
    "Hello world",
    "def f(x):\n    return x  # c",
    "Ｆｕｌｌ ｗｉｄｔｈ ①",
    "",
    "   ",
    "tab\there",
    "emoji 😀 中文",
    "a ▁ b",
]


def _trained(rule: str, dummy: bool, extra: bool, escape: bool, **options: object) -> SentencePieceTokenizer:
    """A small tokenizer trained with these normaliser options (escape_whitespaces set in its proto:
    the trainer has no flag for it)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES),
        model_writer=model,
        vocab_size=380,
        minloglevel=2,
        num_threads=1,
        **{
            **LLAMA_TRAINER_OPTIONS,
            "normalization_rule_name": rule,
            "add_dummy_prefix": dummy,
            "remove_extra_whitespaces": extra,
            **options,
        },
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    proto.normalizer_spec.escape_whitespaces = escape
    return SentencePieceTokenizer.from_bytes(proto.SerializeToString())


@pytest.mark.parametrize(
    ("rule", "dummy", "extra", "escape"),
    list(itertools.product(["identity", "nmt_nfkc"], [True, False], [True, False], [True, False])),
)
def test_every_normaliser_combination_encodes_as_sentencepiece(rule, dummy, extra, escape):
    tok = _trained(rule, dummy, extra, escape)
    backend = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(tok)))
    for text in TEXTS:
        assert backend.encode(text, add_special_tokens=False).ids == tok.encode(text, bos=False), text


def test_llama2c_style_tokenizer_exports_a_b_as_sentencepiece_does(tmp_path):
    """The issue's case: llama2.c's train_vocab leaves remove_extra_whitespaces on; "a  b" was
    [1, 261, 410, 268] in transformers but [1, 261, 268] in SentencePiece."""
    from transformers import AutoTokenizer

    tok = _trained("identity", dummy=True, extra=True, escape=True)
    model = random_model(ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=380, multiple_of=32))
    out = export(tmp_path / "hf", model, tok, format="hf")
    hf = AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        assert hf(text)["input_ids"] == tok.encode(text), text
    assert tok.encode("a  b") == tok.encode("a b")  # the option under test: runs of spaces are one


def test_metas_tokenizer_exports_exactly(shared_data):
    tok = load_tokenizer(shared_data / "models" / "llama_tokenizer" / "tokenizer.model")
    backend = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(tok)))
    for text in [*TEXTS, "    indented code\n\t\ttabs", "12345 ünïcödé"]:
        assert backend.encode(text).ids == tok.encode(text), text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model_type", sentencepiece_model_pb2.TrainerSpec.UNIGRAM, "UNIGRAM model has no exact"),
        ("treat_whitespace_as_suffix", True, "treat_whitespace_as_suffix has no exact"),
    ],
)
def test_what_has_no_exact_tokenizer_json_is_refused(field, value, message):
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(_trained("identity", True, False, True).serialized())
    setattr(proto.trainer_spec, field, value)
    with pytest.raises(UserError, match=message):
        tokenizer_json(SentencePieceTokenizer.from_bytes(proto.SerializeToString()))
