import math

import pytest
import torch

from llamafoundry.config import PRESETS, ModelConfig, RopeScaling, flops_per_token, get_preset, num_params
from llamafoundry.errors import UserError
from llamafoundry.model import Transformer


def count_on_meta(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        model = Transformer(cfg)
    assert all(p.is_meta for p in model.parameters()), "counting must not allocate weights"
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("preset", "billions"),
    [("llama-7b", "6.7"), ("llama-13b", "13.0"), ("llama-33b", "32.5"), ("llama-65b", "65.2")],
)
def test_paper_presets_match_table_2(preset, billions):
    # Table 2 reports sizes to one decimal, truncated (65,285,660,672 parameters is "65.2B").
    count = count_on_meta(get_preset(preset))
    assert count == num_params(get_preset(preset))
    assert f"{math.floor(count / 1e8) / 10:.1f}" == billions


def test_paper_shapes_follow_section_2_2():
    cfg = get_preset("llama-7b")
    assert (cfg.dim, cfg.n_heads, cfg.n_layers, cfg.ffn_hidden_dim) == (4096, 32, 32, 11008)
    assert (cfg.norm_eps, cfg.max_seq_len, cfg.multiple_of) == (1e-6, 2048, 256)
    assert get_preset("llama-65b").ffn_hidden_dim == 22016


def test_llama2_70b_uses_grouped_query_attention():
    cfg = get_preset("llama2-70b")
    assert (cfg.kv_heads, cfg.ffn_hidden_dim, cfg.max_seq_len) == (8, 28672, 4096)
    assert count_on_meta(cfg) == num_params(cfg) == 68_976_648_192


@pytest.mark.parametrize(
    ("preset", "approx"), [("llama-1m", 1e6), ("llama-15m", 15e6), ("llama-110m", 110e6)]
)
def test_small_presets_have_their_advertised_size(preset, approx):
    assert 0.9 * approx <= num_params(get_preset(preset)) <= 1.1 * approx


def test_every_preset_counts_the_same_in_closed_form_and_on_meta():
    for cfg in PRESETS.values():
        assert count_on_meta(cfg) == num_params(cfg)


def test_flops_per_token_is_six_n_plus_attention():
    cfg = get_preset("llama-7b")
    n_matmul = num_params(cfg) - cfg.vocab_size * cfg.dim
    assert flops_per_token(cfg, 2048) == 6 * n_matmul + 12 * 32 * 4096 * 2048
    assert flops_per_token(cfg, 4096) > flops_per_token(cfg, 2048)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(UserError, match="unknown preset 'llama-8b'.*llama-7b"):
        get_preset("llama-8b")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": 100, "n_heads": 3}, "not divisible"),
        ({"n_kv_heads": 3}, "multiple of n_kv_heads"),
        ({"n_layers": 0}, "positive integer"),
        ({"dim": 12, "n_heads": 4}, "even"),
    ],
)
def test_invalid_shapes_are_user_errors(changes, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**{"dim": 64, "n_heads": 4, **changes})


@pytest.mark.parametrize(
    ("preset", "published", "ffn"),
    [
        ("llama3-8b", "8.03", 14336),
        ("llama3.1-8b", "8.03", 14336),
        ("llama3.1-70b", "70.6", 28672),
        ("llama3.1-405b", "405.9", 53248),
        ("llama3.2-1b", "1.24", 8192),
        ("llama3.2-3b", "3.21", 8192),
    ],
)
def test_llama3_presets_have_metas_published_shapes(preset, published, ffn):
    # Meta's model cards round the counts: 8,030,261,248 is "8.03B", 405,853,388,800 "405.9B".
    cfg = get_preset(preset)
    count = count_on_meta(cfg)
    assert count == num_params(cfg)
    assert f"{count / 1e9:.{len(published.split('.')[1])}f}" == published
    assert (cfg.vocab_size, cfg.kv_heads, cfg.rope_theta, cfg.norm_eps) == (128256, 8, 500000.0, 1e-5)
    assert cfg.ffn_hidden_dim == ffn
    llama32 = preset.startswith("llama3.2")
    assert cfg.tie_embeddings == llama32
    if preset == "llama3-8b":
        assert (cfg.max_seq_len, cfg.rope_scaling) == (8192, None)
    else:  # Llama 3.1 and 3.2: 8,192 positions stretched to 131,072
        assert cfg.max_seq_len == 131072
        assert cfg.rope_scaling == RopeScaling(factor=32.0 if llama32 else 8.0)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown model config keys \\['dimension'\\]"):
        ModelConfig.from_dict({"dimension": 64})
