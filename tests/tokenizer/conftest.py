"""A Llama-3-style tokenizer trained here: byte-level BPE with Meta's pre-tokenizer regex and its 256
special tokens after the vocabulary, as a Hugging Face folder (tokenizer.json, tokenizer_config.json with
a Llama 3 chat template, generation_config.json) and as Meta's tiktoken tokenizer.model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

from llamafoundry.config import ModelConfig
from llamafoundry.tokenizer.bytelevel import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    ranks_from_json,
    write_ranks,
)

VOCAB = 1000  # byte-level base vocabulary; the special tokens are ids 1000-1255
# Llama 3.1 Instruct's template, shortened (no tools, no date).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim "
    "+ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
TEXTS = [
    "Hello world",
    "<|begin_of_text|>special<|eot_id|> tokens <|start_header_id|>user<|end_header_id|>",
    "  two  spaces,\n\n\ttabs\t\tand   runs   ",
    "emoji 😀🦙👩‍👩‍👧 and CJK 中文字符 日本語",
    "def add(a, b):\n    return a + b  # code\n\n",
    "I'm sure you'll see 12345 and 3.14159",
    "naïve café Ärger кириллица",
    "",
]


def tiny_config(vocab_size: int = VOCAB + 256) -> ModelConfig:
    return ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=vocab_size, multiple_of=32, max_seq_len=128)


@pytest.fixture(scope="session")
def llama3_files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'json': an HF tokenizer folder, 'tiktoken': the same tokenizer as Meta's tokenizer.model}."""
    backend = Backend(models.BPE(ignore_merges=True))  # tiktoken takes whole pieces in the vocabulary
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    lines = (shared_data / "corpora" / "tinyshakespeare" / "input.txt").read_text().splitlines()[:4000]
    lines += ["def f(x):\n    return x  # code", "emoji 😀 中文字符 кириллица naïve"] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(lines, trainer)
    backend.add_special_tokens(LLAMA3_SPECIAL_TOKENS)
    backend.post_processor = processors.TemplateProcessing(  # BOS first, as Llama 3's tokenizer.json
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", VOCAB)],
    )
    folder = tmp_path_factory.mktemp("llama3-hf")
    backend.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": LLAMA3_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [VOCAB + 1, VOCAB + 9]}))
    meta = tmp_path_factory.mktemp("llama3-meta")
    ranks, _ = ranks_from_json(json.loads(backend.to_str()), "trained")
    (meta / "tokenizer.model").write_bytes(write_ranks(ranks))
    return {"json": folder, "tiktoken": meta / "tokenizer.model"}
