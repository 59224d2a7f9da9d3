"""A `tokenizer.json` for Hugging Face `tokenizers` that encodes exactly as SentencePiece does.

transformers converts a SentencePiece model to a BPE `tokenizers` pipeline without SentencePiece's
word splitting, so runs of spaces (code indentation) come out as different ids. SentencePiece
(`SplitIntoWords`) cuts the text before each "▁" (with allow_whitespace_only_pieces, before each run
of them, kept with the word that follows); the `Split` pre-tokenizer below does the same, and the
merges are ranked by the score of the piece they make, as SentencePiece's BPE encoder ranks them.

The normaliser is built from the model's own NormalizerSpec, option by option, in SentencePiece's
order: the normalisation rule's compiled character map, then remove_extra_whitespaces (no leading or
trailing spaces, runs of spaces as one), add_dummy_prefix, escape_whitespaces (" " as "▁"). What
has no exact equivalent (a unigram model, whitespace as a suffix) is refused.
"""

from __future__ import annotations

import base64

from sentencepiece import sentencepiece_model_pb2

from llamafoundry.errors import UserError
from llamafoundry.tokenizer import SentencePieceTokenizer
from llamafoundry.tokenizer.bytelevel import bos_post_processor

SPACE = "\u2581"
_BPE = sentencepiece_model_pb2.TrainerSpec.BPE


def model_proto(tokenizer: SentencePieceTokenizer) -> sentencepiece_model_pb2.ModelProto:
    """The tokenizer's ModelProto: its trainer and normaliser options as the file records them."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.serialized())
    return proto


def tokenizer_json(tokenizer: SentencePieceTokenizer) -> dict:
    """The tokenizer.json that encodes as `tokenizer` does; a UserError for options it cannot match."""
    proto = model_proto(tokenizer)
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != _BPE:
        kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(trainer.model_type)
        raise UserError(
            f"a SentencePiece {kind} model has no exact tokenizer.json; only BPE models export to hf"
        )
    if trainer.treat_whitespace_as_suffix:
        raise UserError("a SentencePiece model with treat_whitespace_as_suffix has no exact tokenizer.json")
    sp = tokenizer.sp
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    special_ids = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    bos = sp.id_to_piece(tokenizer.bos_id)
    word = f"{SPACE}+[^{SPACE}]*" if trainer.allow_whitespace_only_pieces else f"{SPACE}[^{SPACE}]*"
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": sp.id_to_piece(i),
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in special_ids
        ],
        "normalizer": _normalizer(spec),
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": f"{word}|[^{SPACE}]+"},
            "behavior": "Isolated",
            "invert": False,
        },
        "post_processor": bos_post_processor(bos, tokenizer.bos_id, pair_type_id=0),
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                *(
                    [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]
                    if spec.add_dummy_prefix
                    else []
                ),
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": sp.id_to_piece(tokenizer.unk_id),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": trainer.byte_fallback,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": _merges(tokenizer, vocab),
        },
    }


def _normalizer(spec: sentencepiece_model_pb2.NormalizerSpec) -> dict | None:
    """SentencePiece's normalisation, step by step, as `tokenizers` normalisers."""
    steps: list[dict] = []
    if spec.precompiled_charsmap:  # any rule but identity (nmt_nfkc, a custom TSV) is compiled into it
        steps.append({"type": "Precompiled", "precompiled_charsmap": _base64(spec.precompiled_charsmap)})
    if spec.remove_extra_whitespaces:
        steps.append({"type": "Replace", "pattern": {"Regex": r"\A +| +\z"}, "content": ""})
        steps.append({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    space = SPACE if spec.escape_whitespaces else " "
    if spec.add_dummy_prefix:  # not before empty text: tokenizers' Prepend, like SentencePiece, skips it
        steps.append({"type": "Prepend", "prepend": space})
    if spec.escape_whitespaces:
        steps.append({"type": "Replace", "pattern": {"String": " "}, "content": SPACE})
    return {"type": "Sequence", "normalizers": steps} if steps else None


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _merges(tokenizer: SentencePieceTokenizer, vocab: dict[str, int]) -> list[list[str]]:
    """Every split of every normal piece into two pieces, ranked by the merged piece's score."""
    sp = tokenizer.sp
    ranked = []
    for piece, index in vocab.items():
        if not sp.is_control(index) and not sp.is_unknown(index) and not sp.is_byte(index):
            splits = [
                (piece[:k], piece[k:])
                for k in range(1, len(piece))
                if piece[:k] in vocab and piece[k:] in vocab
            ]
            splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
            ranked.extend((-sp.get_score(index), index, left, right) for left, right in splits)
    ranked.sort(key=lambda m: (m[0], m[1]))
    return [[left, right] for _, _, left, right in ranked]
