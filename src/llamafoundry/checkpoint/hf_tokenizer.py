"""A `tokenizer.json` for Hugging Face `tokenizers` that encodes exactly as SentencePiece does.

transformers converts a SentencePiece model to a BPE `tokenizers` pipeline without SentencePiece's
word splitting, so runs of spaces (code indentation) come out as different ids. SentencePiece
(`SplitIntoWords` with allow_whitespace_only_pieces) cuts the text before each run of "▁" and keeps
the run with the word that follows it; the `Split` pre-tokenizer below does the same, and the
merges are ranked by the score of the piece they make, as SentencePiece's BPE encoder ranks them.
"""

from __future__ import annotations

from llamafoundry.tokenizer import Tokenizer

SPACE = "\u2581"


def tokenizer_json(tokenizer: Tokenizer) -> dict:
    sp = tokenizer.sp
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    special_ids = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    bos = sp.id_to_piece(tokenizer.bos_id)
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
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": SPACE},  # add_dummy_prefix
                {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
            ],
        },
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+"},
            "behavior": "Isolated",
            "invert": False,
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [tokenizer.bos_id], "tokens": [bos]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": sp.id_to_piece(tokenizer.unk_id),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": _merges(tokenizer, vocab),
        },
    }


def _merges(tokenizer: Tokenizer, vocab: dict[str, int]) -> list[list[str]]:
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
