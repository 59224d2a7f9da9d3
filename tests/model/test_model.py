import torch
import torch.nn.functional as F

from llamafoundry.config import ModelConfig
from llamafoundry.model import RMSNorm, Transformer, apply_rotary_emb, precompute_freqs_cis
from tests.helpers import GQA, MHA, random_model


def test_rmsnorm_is_x_over_root_mean_square_times_gain():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.arange(1.0, 9.0)
    torch.testing.assert_close(norm(x), expected)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = precompute_freqs_cis(16, 64)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rotary_emb(q, cos[m : m + 1][None], sin[m : m + 1][None])
        kn = apply_rotary_emb(k, cos[n : n + 1][None], sin[n : n + 1][None])
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(40, 37))
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_rotary_rotates_adjacent_channel_pairs_like_metas_complex_form():
    cos, sin = precompute_freqs_cis(8, 10)
    x = torch.randn(2, 10, 3, 8)
    freqs_cis = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))  # Meta's precompute_freqs_cis
    ref = torch.view_as_real(
        torch.view_as_complex(x.reshape(2, 10, 3, 4, 2)) * freqs_cis[None, :, None]
    ).flatten(3)
    torch.testing.assert_close(apply_rotary_emb(x, cos[None], sin[None]), ref)


def test_model_is_causal():
    model = random_model(MHA)
    tokens = torch.randint(0, MHA.vocab_size, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % MHA.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :8], model(changed)[:, :8])


def test_cached_decoding_equals_full_sequence_logits():
    for cfg in (MHA, GQA):
        model = random_model(cfg)
        tokens = torch.randint(0, cfg.vocab_size, (2, 20))
        with torch.no_grad():
            full = model(tokens)
            model.setup_cache(batch=2, max_seq_len=32)
            steps = [model(tokens[:, :12], 0)]
            steps += [model(tokens[:, t : t + 1], t) for t in range(12, 20)]
            model.clear_cache()
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5


def test_left_padded_rows_match_unpadded_with_positions_and_mask():
    model = random_model(GQA)
    short = torch.randint(0, GQA.vocab_size, (1, 5))
    pad = 3
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), short], dim=1)
    positions = (torch.arange(8) - pad).clamp(min=0)[None]
    mask = (torch.arange(8)[None, :] <= torch.arange(8)[:, None]) & (torch.arange(8)[None, :] >= pad)
    with torch.no_grad():
        expected = model(short)
        got = model(padded, positions=positions, mask=mask[None, None])
    torch.testing.assert_close(got[:, pad:], expected, atol=1e-5, rtol=1e-5)


def test_initialisation_scales_residual_projections_down():
    model = random_model(MHA)
    model.init_weights()
    wq_std = model.layers[0].attention.wq.weight.std().item()
    wo_std = model.layers[0].attention.wo.weight.std().item()
    assert abs(wq_std - 0.02) < 0.003
    assert abs(wo_std - 0.02 / (2 * MHA.n_layers) ** 0.5) < 0.002
    assert torch.equal(model.norm.weight, torch.ones(MHA.dim))


def test_no_biases_and_untied_output():
    model = random_model(MHA)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()


def test_sdpa_grouped_query_equals_repeated_heads():
    # Llama-2's GQA: key/value head j serves query heads j*rep .. (j+1)*rep-1 (Meta's repeat_kv).
    q, k, v = torch.randn(1, 8, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    got = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref = F.scaled_dot_product_attention(
        q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True
    )
    torch.testing.assert_close(got, ref)


def test_casting_the_model_keeps_float32_rotary_tables():
    """`model.to(torch.bfloat16)` (and `load_model(..., dtype="bfloat16")`) must leave a model that runs
    in eager mode: the complex rotary product has no bfloat16 kernel."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=128, max_seq_len=32))
    reference = model(torch.tensor([[1, 2, 3, 4]])).float()
    half = model.to(torch.bfloat16)
    assert half.rope_cos.dtype == half.rope_sin.dtype == torch.float32
    assert half.tok_embeddings.weight.dtype == torch.bfloat16
    logits = half(torch.tensor([[1, 2, 3, 4]])).float()
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max()
