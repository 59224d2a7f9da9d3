"""Tokenizers behind one interface (`Tokenizer`): the paper's SentencePiece (LLaMA 1/2, Sec. 2.1), a
Hugging Face `tokenizer.json` through `tokenizers`, and Meta's tiktoken `tokenizer.model` (Llama 3).
`load_tokenizer` recognises each by its file; `train_tokenizer` trains the paper's kind."""

from llamafoundry.tokenizer.base import Tokenizer
from llamafoundry.tokenizer.json_bpe import JsonTokenizer
from llamafoundry.tokenizer.load import find_tokenizer, load_tokenizer
from llamafoundry.tokenizer.sentencepiece_model import SentencePieceTokenizer
from llamafoundry.tokenizer.train import (
    LLAMA_TRAINER_OPTIONS,
    MIN_VOCAB_SIZE,
    is_sentencepiece_model,
    train_tokenizer,
)

__all__ = [
    "LLAMA_TRAINER_OPTIONS",
    "MIN_VOCAB_SIZE",
    "JsonTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "find_tokenizer",
    "is_sentencepiece_model",
    "load_tokenizer",
    "train_tokenizer",
]
