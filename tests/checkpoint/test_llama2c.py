"""Karpathy's stories260K (llama2.c legacy format) imports and decodes like HF transformers."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llamafoundry.checkpoint import detect_format, load_model


def hf_model_from_llama2c(path) -> LlamaForCausalLM:
    """An independent reading of the legacy format into HF names (HF's rotary needs the q/k permutation)."""
    raw = np.fromfile(path, dtype="<i4", count=7)
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = (int(x) for x in raw)
    data = torch.from_numpy(np.fromfile(path, dtype="<f4", offset=28).copy())
    head = dim // n_heads
    kv_dim = n_kv * head
    offset = 0

    def take(*shape):
        nonlocal offset
        n = int(np.prod(shape))
        out = data[offset : offset + n].view(shape)
        offset += n
        return out

    def permute(w, heads):
        return w.view(heads, w.shape[0] // heads // 2, 2, w.shape[1]).transpose(1, 2).reshape(w.shape)

    emb = take(abs(vocab), dim)
    att_norm = take(n_layers, dim)
    wq, wk, wv = take(n_layers, dim, dim), take(n_layers, kv_dim, dim), take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, dim)
    ffn_norm = take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    final_norm = take(dim)
    take(seq_len, head // 2), take(seq_len, head // 2)  # rotary tables
    cls = emb if vocab > 0 else take(abs(vocab), dim)
    assert offset == data.numel()
    config = LlamaConfig(
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        vocab_size=abs(vocab),
        max_position_embeddings=seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    state = {"model.embed_tokens.weight": emb, "model.norm.weight": final_norm, "lm_head.weight": cls}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        state |= {
            p + "self_attn.q_proj.weight": permute(wq[i], n_heads),
            p + "self_attn.k_proj.weight": permute(wk[i], n_kv),
            p + "self_attn.v_proj.weight": wv[i],
            p + "self_attn.o_proj.weight": wo[i],
            p + "mlp.gate_proj.weight": w1[i],
            p + "mlp.down_proj.weight": w2[i],
            p + "mlp.up_proj.weight": w3[i],
            p + "input_layernorm.weight": att_norm[i],
            p + "post_attention_layernorm.weight": ffn_norm[i],
        }
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def stories(shared_data):
    return shared_data / "models" / "stories260K" / "stories260K.bin"


def test_stories260k_imports_with_its_header_shape(stories):
    assert detect_format(stories) == "llama2c"
    _, tok, cfg = load_model(stories)
    assert tok is None
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.vocab_size, cfg.max_seq_len) == (
        64,
        5,
        8,
        4,
        512,
        512,
    )


def test_stories260k_greedy_continuation_equals_transformers(stories):
    model, _, _ = load_model(stories)
    hf = hf_model_from_llama2c(stories)
    prompt = torch.tensor([[1, 403, 407, 261, 378]])  # BOS + tok512 ids
    with torch.no_grad():
        ours = prompt
        for _ in range(40):
            ours = torch.cat([ours, model(ours)[:, -1].argmax(-1, keepdim=True)], dim=1)
        theirs = hf.generate(
            prompt, max_new_tokens=40, do_sample=False, attention_mask=torch.ones_like(prompt)
        )
        assert torch.equal(ours, theirs)
        # Trained weights: the model is confident about most next tokens (a random model would not be).
        probs = model(ours).softmax(-1).amax(-1)
        assert probs.median() > 0.5
