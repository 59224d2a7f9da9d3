"""GGUF export, read back by llama.cpp's own `gguf` reader; and, where llama-cpp-python is installed,
run by llama.cpp itself."""

from __future__ import annotations

import importlib.util
import math

import gguf
import numpy as np
import pytest
from tests.helpers import assert_llama_cpp_decodes_as_we_do

from llamafoundry.checkpoint import export
from llamafoundry.checkpoint.gguf import gguf_name
from llamafoundry.config import RopeScaling
from llamafoundry.errors import UserError


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q4_0"])
def test_gguf_holds_every_tensor_with_llama_cpp_names_and_shapes(stories, tok512, tmp_path, kind):
    path = export(tmp_path / f"stories-{kind}.gguf", stories, tok512, "gguf", dtype=kind)
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    # stories260K shares its classifier with the embedding table: llama.cpp then scores with token_embd.
    state = {n: t for n, t in stories.state_dict().items() if n != "output.weight"}
    assert set(tensors) == {gguf_name(n) for n in state}
    assert "blk.4.ffn_gate.weight" in tensors and "output_norm.weight" in tensors
    for name, ours in state.items():
        t = tensors[gguf_name(name)]
        assert tuple(int(d) for d in reversed(t.shape)) == tuple(
            ours.shape
        )  # GGUF lists dims innermost first
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
        if ours.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32  # llama.cpp wants norms in float32
        # Q4_0 keeps 16 steps of a block's largest value / 8: an eighth of it off at worst.
        tolerance = {"f32": 0, "f16": 1e-3, "q8_0": 2e-2, "q4_0": 0.13}[kind] * float(ours.abs().max())
        np.testing.assert_allclose(values, ours.numpy(), atol=tolerance + 1e-7, rtol=0)
    # ffn_down's rows are 172 values, not whole 32-value blocks: it falls back to F16 as llama.cpp's does.
    expected = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}[kind]
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == expected
    blocks = kind in ("q8_0", "q4_0")
    assert tensors["blk.0.ffn_down.weight"].tensor_type.name == ("F16" if blocks else expected)


def test_gguf_metadata_and_tokenizer(stories, tok512, tmp_path):
    reader = gguf.GGUFReader(export(tmp_path / "m.gguf", stories, tok512, "gguf"))
    cfg = stories.cfg
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == cfg.n_layers
    assert _field(reader, "llama.embedding_length") == cfg.dim
    assert _field(reader, "llama.feed_forward_length") == cfg.ffn_hidden_dim
    assert _field(reader, "llama.attention.head_count") == cfg.n_heads
    assert _field(reader, "llama.attention.head_count_kv") == cfg.kv_heads
    assert _field(reader, "llama.rope.dimension_count") == cfg.head_dim
    assert _field(reader, "llama.context_length") == cfg.max_seq_len
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg.norm_eps)
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert _field(reader, "tokenizer.ggml.tokens") == [
        tok512.id_to_piece(i) for i in range(tok512.vocab_size)
    ]
    assert _field(reader, "tokenizer.ggml.scores") == pytest.approx(
        [tok512.sp.get_score(i) for i in range(512)]
    )
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[tok512.unk_id] == gguf.TokenType.UNKNOWN and types[tok512.bos_id] == gguf.TokenType.CONTROL
    assert types[3] == gguf.TokenType.BYTE  # <0x00>, the first byte-fallback piece
    assert _field(reader, "tokenizer.ggml.bos_token_id") == tok512.bos_id
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tok512.eos_id
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True


def test_gguf_export_needs_the_models_tokenizer(stories, meta_tokenizer, tmp_path):
    with pytest.raises(UserError, match="--tokenizer"):
        export(tmp_path / "a.gguf", stories, None, "gguf")
    with pytest.raises(UserError, match="512"):
        export(tmp_path / "b.gguf", stories, meta_tokenizer, "gguf")  # 32000 pieces for a 512-token model
    with pytest.raises(UserError, match="q8_0"):
        export(tmp_path / "c.gguf", stories, None, "gguf", dtype="q4_k")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_convert_cli_writes_gguf(stories_path, tok512, tmp_path, cli):
    out = tmp_path / "out.gguf"
    done = cli(
        "convert", stories_path, "-o", out, "--to", "gguf", "--dtype", "q8_0", "--tokenizer", tok512.path
    )
    assert done.returncode == 0, done.stderr
    reader = gguf.GGUFReader(out)
    assert _field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert _field(reader, "general.name") == "stories260K"  # the source's name, not the program's
    assert "writing tensors" in done.stderr and "100%" in done.stderr  # the progress bar ran to its end


def llama3_model(random_model, tied: bool = True):
    """A Llama-3.2-shaped random model: grouped-query attention, Meta's rope scaling, a tied table."""
    return random_model(
        n_heads=4,
        n_kv_heads=2,
        vocab_size=512,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=32.0),
        tie_embeddings=tied,
    )


def test_gguf_of_a_llama3_model_holds_rope_factors_as_llama_cpps_converter_writes_them(
    random_model, tok512, tmp_path
):
    model = llama3_model(random_model)
    reader = gguf.GGUFReader(export(tmp_path / "Llama-3.2-tiny.gguf", model, tok512, "gguf"))
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and "token_embd.weight" in tensors
    assert _field(reader, "general.name") == "Llama-3.2-tiny"
    # convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, number by number.
    cfg, factors = model.cfg, []
    for i in range(0, cfg.head_dim, 2):
        wavelen = 2 * math.pi * cfg.rope_theta ** (i / cfg.head_dim)
        if wavelen < 8192 / 4:
            factors.append(1.0)
        elif wavelen > 8192 / 1:
            factors.append(32.0)
        else:
            smooth = (8192 / wavelen - 1) / (4 - 1)
            factors.append(1 / ((1 - smooth) / 32 + smooth))
    ours = tensors["rope_freqs.weight"]
    assert ours.tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_allclose(ours.data, factors, rtol=1e-5)
    assert min(factors) == 1.0 and max(factors) == 32.0 and len(set(factors)) > 2  # every band


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (llama_cpp) is not installed: pip install 'llamafoundry[bench]'",
)
def test_llama_cpp_runs_our_gguf_with_our_greedy_tokens(
    stories, tok512, random_model, meta_tokenizer, tmp_path
):
    from llama_cpp import Llama

    assert_llama_cpp_decodes_as_we_do(stories, tok512, tmp_path / "stories.gguf")
    # llama.cpp's tokenizer, built from our metadata, splits text as SentencePiece does (Meta's vocabulary).
    model = random_model(vocab_size=32000)
    meta_path = export(tmp_path / "meta.gguf", model, meta_tokenizer, "gguf")
    vocab_only = Llama(model_path=str(meta_path), vocab_only=True, verbose=False)
    for text in ("Hello world", "The year 1905 and naïve café — 東京", "  two  spaces\nand a newline"):
        assert vocab_only.tokenize(text.encode(), add_bos=True) == meta_tokenizer.encode(text)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python (llama_cpp) is not installed: pip install 'llamafoundry[bench]'",
)
def test_llama_cpp_decodes_a_llama3_shaped_gguf_with_our_greedy_tokens(random_model, tok512, tmp_path):
    # Grouped-query attention, rope scaling by the rope_freqs tensor, scores from the tied token_embd.
    assert_llama_cpp_decodes_as_we_do(llama3_model(random_model), tok512, tmp_path / "llama3.gguf")
