"""The Llama family's shapes against HF transformers: tied embeddings (Llama 3.2 1B/3B), grouped-query
attention (Llama-2 70B), Llama 3.1's rope scaling. Folders made by transformers load with its logits,
and keep them through every format we write."""

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llamafoundry.checkpoint import export, load_model
from llamafoundry.checkpoint.common import build_model
from llamafoundry.checkpoint.hf import config_from_hf
from llamafoundry.checkpoint.meta import params_from_config
from llamafoundry.config import ModelConfig, RopeScaling, flops_per_token, matmul_params, num_params
from llamafoundry.errors import UserError
from llamafoundry.model import rope_freqs
from tests.helpers import random_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Meta's Llama 3.1 numbers (what params.json's use_scaled_rope stands for) with 3.2's factor 32. A head of
# 16 channels with theta 500,000 puts one frequency in the interpolated band and three in the slowed
# one, so the scaling shows in the logits of a 200-token sequence.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
SHAPES = {
    "llama2": {"num_key_value_heads": 4, "rope_theta": 10000.0},
    "gqa": {"num_key_value_heads": 2},
    "tied": {"tie_word_embeddings": True},
    "llama3": {"num_key_value_heads": 2, "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE},
    "llama3.2": {
        "num_key_value_heads": 2,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE,
        "tie_word_embeddings": True,
    },
}


def hf_folder(tmp_path, shape: str):
    """A LlamaForCausalLM of `shape`, random (norm gains too; weights wide enough that positions
    matter to attention), saved by transformers."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=97,
        max_position_embeddings=16384,
        rms_norm_eps=1e-5,
        **{"tie_word_embeddings": False, "rope_theta": 1000.0, **SHAPES[shape]},
    )
    torch.manual_seed(1)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


def _shape(cfg: ModelConfig) -> dict:
    """What a config says about the computation; Meta's params.json has no context and states the
    SwiGLU size by its sizing rule."""
    ignored = {"max_seq_len", "hidden_dim", "multiple_of", "ffn_dim_multiplier"}
    return {k: v for k, v in cfg.to_dict().items() if k not in ignored} | {"ffn": cfg.ffn_hidden_dim}


def _logits(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits if hasattr(model, "config") else model(tokens)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_transformers_folder_round_trips_every_format_with_its_logits(shape, tmp_path):
    hf, folder = hf_folder(tmp_path, shape)
    tokens = torch.randint(0, 97, (2, 200))
    reference = _logits(hf, tokens)
    model, _, cfg = load_model(folder)
    assert cfg.tie_embeddings == SHAPES[shape].get("tie_word_embeddings", False)
    assert (cfg.rope_scaling is not None) == ("rope_scaling" in SHAPES[shape])
    assert (_logits(model, tokens) - reference).abs().max().item() < 1e-4
    # HF -> native -> meta -> hf -> ours, each written from what the step before read back.
    for step, fmt in enumerate(["native", "meta", "hf"]):
        export(tmp_path / f"{step}-{fmt}", model, format=fmt)
        model, _, back = load_model(tmp_path / f"{step}-{fmt}")
        assert _shape(back) == _shape(cfg), fmt
        assert (_logits(model, tokens) - reference).abs().max().item() < 1e-4, fmt
    theirs = LlamaForCausalLM.from_pretrained(tmp_path / "2-hf", dtype=torch.float32).eval()
    assert (_logits(theirs, tokens) - reference).abs().max().item() < 1e-4
    if cfg.tie_embeddings:
        assert model.output.weight is model.tok_embeddings.weight


def test_llama3_scaling_changes_the_logits_it_is_checked_on(tmp_path):
    # Without this, the parity above could pass with the scaling ignored.
    hf, folder = hf_folder(tmp_path, "llama3")
    model, _, cfg = load_model(folder)
    unscaled, _, _ = load_model(folder)
    unscaled.cfg = cfg.replace(rope_scaling=None)
    unscaled.reset_rope()
    tokens = torch.randint(0, 97, (1, 200))
    assert (_logits(model, tokens) - _logits(unscaled, tokens)).abs().max().item() > 1e-3


def test_rope_scaling_matches_transformers_in_every_band():
    # An original context of 64 puts the frequencies of a 64-channel head in all three bands.
    rope = {**LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}
    config = LlamaConfig(
        hidden_size=256, num_attention_heads=4, max_position_embeddings=512, rope_parameters=rope
    )
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    scaling = RopeScaling(factor=8.0, original_max_position_embeddings=64)
    ours = rope_freqs(64, 10000.0, scaling)
    plain = rope_freqs(64, 10000.0)
    assert torch.equal(ours, theirs.float())
    ratio = plain / ours
    assert ratio.min() == 1.0 and ratio.max() == 8.0 and ((ratio > 1) & (ratio < 8)).any()


def test_tied_model_counts_and_stores_its_table_once(tmp_path):
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=96, multiple_of=32, tie_embeddings=True)
    model = random_model(cfg)
    untied = cfg.replace(tie_embeddings=False)
    assert model.output.weight is model.tok_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == num_params(cfg) == num_params(untied) - 96 * 64
    # The table multiplies as the output projection: it counts towards C = 6ND.
    assert matmul_params(cfg) == matmul_params(untied)
    assert flops_per_token(cfg, 64) == flops_per_token(untied, 64)
    export(tmp_path / "native", model, format="native")
    with safe_open(tmp_path / "native" / "model.safetensors", "pt") as f:
        assert "output.weight" not in f.keys()  # noqa: SIM118 - a safetensors handle, not a dict
        assert "tok_embeddings.weight" in f.keys()  # noqa: SIM118
    export(tmp_path / "hf", model, format="hf")
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"] is True
    # Meta's Llama 3.2 files hold the table twice; read back, the model is tied again.
    export(tmp_path / "meta", model, format="meta")
    saved = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    assert torch.equal(saved["output.weight"], saved["tok_embeddings.weight"])
    for fmt in ("native", "hf", "meta"):
        back, _, back_cfg = load_model(tmp_path / fmt)
        assert back_cfg.tie_embeddings and back.output.weight is back.tok_embeddings.weight, fmt


def test_tied_model_trains_as_one_table():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=64, multiple_of=16, tie_embeddings=True)
    model = random_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 64, (2, 16))
    torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.step()
    assert model.output.weight is model.tok_embeddings.weight
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))


def test_meta_params_say_use_scaled_rope_and_the_factor_when_not_8():
    base = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=32)
    assert params_from_config(base.replace(rope_scaling=RopeScaling()))["use_scaled_rope"] is True
    assert "rope_scaling_factor" not in params_from_config(base.replace(rope_scaling=RopeScaling()))
    assert (
        params_from_config(base.replace(rope_scaling=RopeScaling(factor=32.0)))["rope_scaling_factor"] == 32
    )
    with pytest.raises(UserError, match="export it as hf or native"):
        params_from_config(base.replace(rope_scaling=RopeScaling(original_max_position_embeddings=64)))


def test_meta_folder_without_a_factor_is_llama31_or_32_by_its_tie(tmp_path):
    cfg = ModelConfig(dim=64, n_layers=1, n_heads=4, vocab_size=96, multiple_of=32)
    for tied, factor in ((False, 8.0), (True, 32.0)):
        model = random_model(cfg.replace(rope_scaling=RopeScaling(factor=factor), tie_embeddings=tied))
        export(tmp_path / str(tied), model, format="meta")
        params = json.loads((tmp_path / str(tied) / "params.json").read_text())
        params.pop("rope_scaling_factor", None)  # as Meta's 3.2 params.json: use_scaled_rope alone
        (tmp_path / str(tied) / "params.json").write_text(json.dumps(params))
        _, _, back = load_model(tmp_path / str(tied))
        assert (back.rope_scaling.factor, back.tie_embeddings, back.max_seq_len) == (factor, tied, 131072)


def test_hf_config_of_transformers_4_reads_rope_scaling_beside_rope_theta(tmp_path):
    values = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 96,
        "intermediate_size": 176,
        "rope_theta": 500000.0,
        "rope_scaling": {**LLAMA3_ROPE, "factor": 8.0},
    }
    cfg = config_from_hf(values, tmp_path)
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == RopeScaling(factor=8.0, original_max_position_embeddings=8192)


def test_native_config_json_round_trips_rope_scaling_and_refuses_unknown_keys():
    cfg = ModelConfig(rope_scaling=RopeScaling(factor=32.0), tie_embeddings=True)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    values = cfg.to_dict()
    values["rope_scaling"]["beta_fast"] = 32
    with pytest.raises(UserError, match="unknown rope_scaling keys \\['beta_fast'\\]"):
        ModelConfig.from_dict(values)
    with pytest.raises(UserError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "rope_type": "llama3"})
    assert dataclasses.asdict(cfg.rope_scaling) == cfg.to_dict()["rope_scaling"]


def test_build_model_ties_a_state_that_holds_the_table_once_or_twice():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=64, multiple_of=16, tie_embeddings=True)
    model = random_model(cfg)
    once = {k: v for k, v in model.state_dict().items() if k != "output.weight"}
    twice = {k: v.clone() for k, v in model.state_dict().items()}  # a training checkpoint's two copies
    for state in (once, twice):
        back = build_model(cfg, state, "test")
        assert back.output.weight is back.tok_embeddings.weight
        assert torch.equal(back.output.weight, model.output.weight)
    with pytest.raises(UserError, match="missing tok_embeddings.weight"):
        build_model(cfg, {k: v for k, v in once.items() if k != "tok_embeddings.weight"}, "test")
