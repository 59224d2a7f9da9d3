import json

import pytest

from llamafoundry.data.shards import build_shards
from llamafoundry.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def shakespeare_tokens(tmp_path_factory, shared_data):
    """Token shards of Tiny Shakespeare (one document per paragraph) with a 512-piece tokenizer."""
    folder = tmp_path_factory.mktemp("shakespeare")
    source = shared_data / "corpora" / "tinyshakespeare" / "input.txt"
    train_tokenizer([source], folder / "tokenizer.model", vocab_size=512)
    docs = folder / "docs.jsonl"
    paragraphs = source.read_text().split("\n\n")
    docs.write_text("".join(json.dumps({"id": str(i), "text": p}) + "\n" for i, p in enumerate(paragraphs)))
    build_shards(
        {"books": [docs]}, folder / "tokenizer.model", folder / "tokens", val_fraction=0.05, workers=1
    )
    return folder / "tokens"
