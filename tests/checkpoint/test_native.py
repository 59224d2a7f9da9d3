import os

import pytest
import torch

from llamafoundry.checkpoint import detect_format, load_model, save_model
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import load_tokenizer
from tests.helpers import GQA, random_model


def test_native_folder_round_trips_weights_config_and_tokenizer(tmp_path, shared_data):
    cfg = GQA.replace(vocab_size=32000)
    model = random_model(cfg)
    tok = load_tokenizer(shared_data / "models" / "llama_tokenizer" / "tokenizer.model")
    with pytest.raises(UserError, match="tokenizer has 32000 tokens but the model's vocabulary only 96"):
        save_model(tmp_path / "small", random_model(GQA), tok)
    save_model(tmp_path / "m", model, tok)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        ".llamafoundry-output.json",  # what wrote the folder, and its files: --overwrite checks it
        "config.json",
        "model.safetensors",
        "tokenizer.model",
    ]
    assert detect_format(tmp_path / "m") == "native"
    # Readable as the umask allows (safetensors writes owner-only files): a serving user can load it.
    umask = os.umask(0)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "m").iterdir()} == {0o666 & ~umask}
    back, back_tok, cfg = load_model(tmp_path / "m")
    assert cfg == GQA.replace(vocab_size=32000)
    assert back_tok.encode("Hello world") == tok.encode("Hello world")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not back.training


def test_saving_over_an_earlier_save_needs_overwrite_and_replaces_it_whole(tmp_path):
    save_model(tmp_path / "m", random_model(GQA, seed=1))
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        save_model(tmp_path / "m", random_model(GQA, seed=2))
    save_model(tmp_path / "m", random_model(GQA, seed=2), dtype="bfloat16", overwrite=True)
    back, _, _ = load_model(tmp_path / "m")
    assert back.output.weight.dtype == torch.bfloat16
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind
    (tmp_path / "m" / "notes.txt").write_text("the user's, not ours")
    with pytest.raises(UserError, match="holds notes.txt, which llamafoundry did not write"):
        save_model(tmp_path / "m", random_model(GQA, seed=3), overwrite=True)
    assert (tmp_path / "m" / "notes.txt").read_text() == "the user's, not ours"


def test_presets_give_seeded_random_models():
    a, tok, cfg = load_model("llama-1m", seed=3)
    b, _, _ = load_model("llama-1m", seed=3)
    assert tok is None and cfg.dim == 128
    assert torch.equal(a.output.weight, b.output.weight)
