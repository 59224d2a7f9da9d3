import functools
import tempfile
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from llamafoundry.errors import UserError
from llamafoundry.tokenizer import LLAMA_TRAINER_OPTIONS, Tokenizer, load_tokenizer, train_tokenizer

SAMPLE = [
    "Hello world",
    "The year 1984 had 365 days; pi is 3.14159.",
    "def add(a, b):\n    return a + b  # code\n",
    "  two leading spaces and trailing  ",
    "emoji 😀🦙 and CJK 中文字符 and Cyrillic кириллица",
    "tabs\tand\nnewlines\n\n",
    "",
]


class MetaReferenceTokenizer:
    """Meta's llama/tokenizer.py (first release), verbatim in behaviour: BOS + ids + EOS."""

    def __init__(self, model_path: str) -> None:
        self.sp_model = spm.SentencePieceProcessor(model_file=model_path)
        self.bos_id, self.eos_id = self.sp_model.bos_id(), self.sp_model.eos_id()

    def encode(self, s: str, bos: bool, eos: bool) -> list[int]:
        t = self.sp_model.encode(s)
        return ([self.bos_id] if bos else []) + t + ([self.eos_id] if eos else [])


@pytest.fixture(scope="module")
def meta_tokenizer_path(shared_data):
    return shared_data / "models" / "llama_tokenizer" / "tokenizer.model"


@functools.cache
def trained_tokenizer() -> Tokenizer:
    """A small tokenizer trained once per session on a corpus with numbers, code and accents."""
    folder = Path(tempfile.mkdtemp(prefix="tok-"))
    corpus = folder / "corpus.txt"
    lines = [f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(400)]
    lines += ["def f(x):\n    return x * 2", "Ärger über Öl", "naïve café"] * 20
    corpus.write_text("\n".join(lines), encoding="utf-8")
    return train_tokenizer([corpus], folder / "tokenizer.model", vocab_size=400)


@pytest.fixture
def trained() -> Tokenizer:
    return trained_tokenizer()


def test_metas_tokenizer_gives_the_reference_ids(meta_tokenizer_path):
    ours = load_tokenizer(meta_tokenizer_path)
    reference = MetaReferenceTokenizer(str(meta_tokenizer_path))
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id, ours.unk_id) == (32000, 1, 2, -1, 0)
    for text in SAMPLE:
        for bos, eos in [(True, False), (True, True), (False, False)]:
            assert ours.encode(text, bos=bos, eos=eos) == reference.encode(text, bos=bos, eos=eos)
        assert ours.decode(ours.encode(text)) == text
    # Ids every LLaMA user has seen: "Hello world" -> <s> ▁Hello ▁world; digits one by one.
    assert ours.encode("Hello world") == [1, 15043, 3186]
    assert ours.encode("12345") == [1, 29871, 29896, 29906, 29941, 29946, 29945]
    assert ours.encode_batch(SAMPLE) == [ours.encode(t) for t in SAMPLE]


def test_our_hf_export_of_metas_tokenizer_gives_the_same_ids(meta_tokenizer_path, tmp_path):
    from transformers import AutoTokenizer

    from llamafoundry.checkpoint import export
    from llamafoundry.config import ModelConfig
    from tests.helpers import random_model

    tok = load_tokenizer(meta_tokenizer_path)
    model = random_model(ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=32000, multiple_of=32))
    export(tmp_path / "hf", model, tok, format="hf")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in SAMPLE:
        assert hf_tok(text)["input_ids"] == tok.encode(text), text


def test_trainer_uses_the_released_llama_options(trained):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(trained.serialized())
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    assert (spec.split_digits, spec.byte_fallback, spec.allow_whitespace_only_pieces) == (True, True, True)
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    assert (norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces) == ("identity", True, False)
    assert spec.character_coverage == pytest.approx(LLAMA_TRAINER_OPTIONS["character_coverage"])


def test_numbers_split_into_single_digits(trained):
    pieces = [trained.id_to_piece(i) for i in trained.encode("12345", bos=False)]
    assert [p for p in pieces if p != "▁"] == ["1", "2", "3", "4", "5"]


def test_unseen_characters_fall_back_to_bytes_not_unk(trained):
    ids = trained.encode("🦙", bos=False)
    assert trained.unk_id not in ids
    assert [trained.id_to_piece(i) for i in ids if trained.id_to_piece(i) != "▁"] == [
        "<0xF0>",
        "<0x9F>",
        "<0xA6>",
        "<0x99>",
    ]
    assert trained.decode(ids) == "🦙"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_unicode_string_round_trips(text):
    tok = trained_tokenizer()
    assert tok.decode(tok.encode(text)) == text


def test_missing_and_invalid_tokenizer_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(UserError, match="not a valid SentencePiece model"):
        load_tokenizer(bad)


def test_training_failure_leaves_no_file(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("tiny corpus\n")
    with pytest.raises(UserError, match="tokenizer training failed"):
        train_tokenizer([corpus], tmp_path / "out.model", vocab_size=5000)
    assert not (tmp_path / "out.model").exists()


def test_training_on_a_sample_gives_the_same_tokenizer_every_run(shared_data, tmp_path):
    """Beyond input_sentence_size lines, the seeded sample (and so the tokenizer) is the same every run;
    another seed draws another sample."""
    corpus = [shared_data / "corpora" / "tinyshakespeare" / "input.txt"]

    def pieces(name: str, seed: int) -> list[str]:
        path = tmp_path / name / "t.model"  # "a" twice: the second run replaces the first's tokenizer
        tok = train_tokenizer(corpus, path, 512, input_sentence_size=5000, seed=seed, overwrite=True)
        return [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]

    assert pieces("a", 0) == pieces("b", 0)
    assert pieces("a", 0) != pieces("c", 1)
    # 0 keeps SentencePiece's meaning, every line: the same tokenizer as a size above the line count.
    every_line = train_tokenizer(corpus, tmp_path / "d" / "t.model", 512, input_sentence_size=0)
    assert every_line.sp.id_to_piece(list(range(512))) == pieces_of(corpus, tmp_path / "e", 10**7)


def pieces_of(corpus: list[Path], folder: Path, size: int) -> list[str]:
    tok = train_tokenizer(corpus, folder / "t.model", 512, input_sentence_size=size)
    return tok.sp.id_to_piece(list(range(512)))
