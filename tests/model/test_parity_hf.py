"""Exactness: our model and HF transformers' LlamaForCausalLM give the same logits for the same weights."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llamafoundry.checkpoint import export, load_model
from tests.helpers import GQA, MHA, random_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("cfg", [MHA, GQA], ids=["llama1-mha", "llama2-gqa"])
def test_our_export_loads_in_transformers_with_equal_logits(cfg, tmp_path):
    model = random_model(cfg)
    export(tmp_path / "hf", model, format="hf")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        diff = (model(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < 1e-4


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["llama1-mha", "llama2-gqa"])
def test_a_folder_saved_by_transformers_loads_with_equal_logits(kv_heads, tmp_path):
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=97,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=1000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "hf")
    model, _, cfg = load_model(tmp_path / "hf")
    assert (cfg.kv_heads, cfg.ffn_hidden_dim, cfg.rope_theta, cfg.norm_eps) == (kv_heads, 176, 1000.0, 1e-5)
    tokens = torch.randint(0, 97, (3, 50))
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max().item() < 1e-4


def test_sharded_hf_export_round_trips_bit_exactly(tmp_path):
    from llamafoundry.checkpoint.hf import save_hf

    model = random_model(GQA)
    save_hf(tmp_path / "hf", model, max_shard_bytes=60_000)
    shards = sorted(p.name for p in (tmp_path / "hf").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    back, _, _ = load_model(tmp_path / "hf")
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    tokens = torch.randint(0, GQA.vocab_size, (1, 30))
    with torch.no_grad():
        assert (back(tokens) - hf(tokens).logits).abs().max().item() < 1e-4
