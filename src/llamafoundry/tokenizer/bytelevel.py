"""Byte-level BPE in its two file formats: Hugging Face's `tokenizer.json` and tiktoken's rank file.

tiktoken stores each token as its bytes and its rank, and merges whichever adjacent pair makes the
lowest-ranked token; `tokenizer.json` stores each token as GPT-2's printable spelling of its bytes and
an ordered list of merges. Llama 3 ships both (Meta's `tokenizer.model`, Hugging Face's
`tokenizer.json`); these functions turn one into the other, exactly where the pipeline is Llama 3's.
"""

from __future__ import annotations

import base64
import functools
import json

from llamafoundry.errors import UserError

# Meta's llama3 tokenizer.py: the pre-tokenizer regex (cl100k's) and the special tokens that follow the
# 128,000 ranks. The names are Llama 3.1's (llama-models), which Llama 3.2 and 3.3 share; Llama 3.0 had
# the same ids for every token it used (begin/end of text, headers, eot) and called the rest reserved.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_NAMED = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",  # end of message (a tool call follows)
    "<|eot_id|>",  # end of turn
    "<|python_tag|>",
]
LLAMA3_SPECIAL_TOKENS = _NAMED + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(_NAMED))]
LLAMA3_STOP_TOKENS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")


@functools.cache
def byte_chars() -> tuple[str, ...]:
    """GPT-2's printable character for each byte value (`bytes_to_unicode`), as tokenizer.json spells them."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def spell(token: bytes) -> str:
    """A token's bytes in tokenizer.json's byte-level spelling."""
    chars = byte_chars()
    return "".join(chars[b] for b in token)


def unspell(piece: str) -> bytes | None:
    """The bytes a byte-level piece spells; None when it is not byte-level spelling."""
    index = _char_index()
    try:
        return bytes(index[c] for c in piece)
    except KeyError:
        return None


@functools.cache
def _char_index() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_chars())}


def read_ranks(data: bytes, name: str) -> dict[bytes, int]:
    """A tiktoken rank file's tokens: one "base64-token rank" line each (tiktoken's `load_tiktoken_bpe`,
    whose loader would also copy a local file into a cache folder)."""
    ranks: dict[bytes, int] = {}
    try:
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:
        raise UserError(f"{name} is neither a SentencePiece model nor a tiktoken rank file") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{name}: tiktoken ranks should be 0 to {len(ranks) - 1}, each once")
    return ranks


def write_ranks(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's rank file: the lines `read_ranks` reads, in rank order."""
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in ordered)


def merges_of(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The ordered merges that make a BPE encode as tiktoken does with `ranks`: each multi-byte token is
    made from the two parts tiktoken's own merging reaches with lower ranks only (as transformers'
    TikTokenConverter derives them), in the order of its rank."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _merge_below(ranks, token, rank)
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
    return merges


def _merge_below(ranks: dict[bytes, int], token: bytes, limit: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def llama3_pre_tokenizer() -> dict:
    """Llama 3's tokenizer.json pre-tokenizer: Meta's regex, then bytes to GPT-2's characters."""
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


def bos_post_processor(bos: str, bos_id: int, pair_type_id: int) -> dict:
    """tokenizer.json's TemplateProcessing that puts BOS before each sequence (Llama's add_bos_token);
    `pair_type_id` is the second sequence's type id (0 in transformers' SentencePiece conversions, 1 in
    Llama 3's tokenizer.json)."""
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": pair_type_id}},
            {"Sequence": {"id": "B", "type_id": pair_type_id}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def json_from_ranks(ranks: dict[bytes, int], specials: list[str], bos: str) -> dict:
    """The tokenizer.json of a tiktoken tokenizer: the same ids, exactly the same encoding (whole
    pieces in the vocabulary are taken as they are, as tiktoken does: `ignore_merges`)."""
    base = len(ranks)
    added = [
        {
            "id": base + i,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, name in enumerate(specials)
    ]
    bos_id = base + specials.index(bos)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": llama3_pre_tokenizer(),
        "post_processor": bos_post_processor(bos, bos_id, pair_type_id=1),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {spell(token): rank for token, rank in ranks.items()},
            "merges": [[spell(a), spell(b)] for a, b in merges_of(ranks)],
        },
    }


def ranks_from_json(content: dict, name: str) -> tuple[dict[bytes, int], list[str]]:
    """(ranks, special tokens) of a tokenizer.json that tiktoken encodes exactly as it is: Llama 3's
    pipeline, the base vocabulary first, merges in the order of the tokens they make. A UserError
    naming what differs otherwise."""
    model = content.get("model") or {}
    problem = None
    if model.get("type") != "BPE" or content.get("normalizer") is not None:
        problem = "it is not a byte-level BPE without a normaliser"
    elif json.dumps(content.get("pre_tokenizer"), sort_keys=True) != json.dumps(
        llama3_pre_tokenizer(), sort_keys=True
    ):
        problem = "its pre-tokenizer is not Llama 3's"
    if problem is None:
        vocab: dict[str, int] = model.get("vocab") or {}
        ranks = {unspell(piece): i for piece, i in vocab.items()}
        merged = [vocab.get(_joined(m)) for m in model.get("merges") or []]
        if None in ranks or sorted(ranks.values()) != list(range(len(ranks))):
            problem = "its vocabulary is not byte-level tokens numbered from 0"
        elif None in merged or merged != sorted(merged) or not model.get("ignore_merges"):
            problem = "its merges are not ranked by the tokens they make"
    if problem is None:
        specials = [t["content"] for t in sorted(content.get("added_tokens") or [], key=lambda t: t["id"])]
        if [t["id"] for t in content.get("added_tokens") or []] != list(
            range(len(ranks), len(ranks) + len(specials))
        ):
            problem = "its special tokens do not follow the vocabulary"
    if problem is not None:
        raise UserError(
            f"{name} cannot be written as a tiktoken tokenizer.model: {problem}; export to hf or native"
        )
    return ranks, specials


def _joined(merge: list[str] | str) -> str:
    return "".join(merge.split(" ", 1) if isinstance(merge, str) else merge)
