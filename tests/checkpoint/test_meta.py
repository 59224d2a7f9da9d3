"""Meta's consolidated.NN.pth layout, with model-parallel shards, loads as it is."""

import json

import torch

from llamafoundry.checkpoint import detect_format, export, load_model
from tests.helpers import GQA, MHA, random_model

# How Meta's fairscale layers split each tensor across model-parallel ranks (llama/model.py, first release):
# ParallelEmbedding splits the embedding dim; ColumnParallelLinear the output rows; RowParallelLinear the
# input columns; RMSNorm gains are replicated.
META_SPLIT = {
    "tok_embeddings": 1,
    "attention.wq": 0,
    "attention.wk": 0,
    "attention.wv": 0,
    "attention.wo": 1,
    "feed_forward.w1": 0,
    "feed_forward.w2": 1,
    "feed_forward.w3": 0,
    "output": 0,
}


def write_meta_folder(folder, model, n_shards):
    """The layout Meta's released checkpoints have, written independently of our exporter."""
    folder.mkdir()
    shards = [{} for _ in range(n_shards)]
    for name, tensor in model.state_dict().items():
        key = (
            name.removesuffix(".weight").split(".", 2)[-1]
            if name.startswith("layers.")
            else name.removesuffix(".weight")
        )
        dim = META_SPLIT.get(key)
        parts = [tensor] * n_shards if dim is None else tensor.chunk(n_shards, dim=dim)
        for shard, part in zip(shards, parts, strict=True):
            shard[name] = part.clone()
    for rank, shard in enumerate(shards):
        shard["rope.freqs"] = torch.zeros(model.cfg.head_dim // 2)  # LLaMA-1 files carry this buffer
        torch.save(shard, folder / f"consolidated.{rank:02d}.pth")
    cfg = model.cfg
    params = {
        "dim": cfg.dim,
        "multiple_of": cfg.multiple_of,
        "n_heads": cfg.n_heads,
        "n_layers": cfg.n_layers,
        "norm_eps": cfg.norm_eps,
        "vocab_size": -1,
    }
    if cfg.n_kv_heads:
        params |= {"n_kv_heads": cfg.n_kv_heads, "rope_theta": cfg.rope_theta}
    (folder / "params.json").write_text(json.dumps(params))
    return shards


def test_two_model_parallel_shards_load_to_the_unsharded_logits(tmp_path):
    for cfg, name in ((MHA, "mha"), (GQA, "gqa")):
        model = random_model(cfg)
        write_meta_folder(tmp_path / name, model, n_shards=2)
        assert detect_format(tmp_path / name) == "meta"
        loaded, _, loaded_cfg = load_model(tmp_path / name, max_seq_len=cfg.max_seq_len)
        assert loaded_cfg == cfg
        tokens = torch.randint(0, cfg.vocab_size, (2, 24))
        with torch.no_grad():
            assert torch.equal(loaded(tokens), model(tokens))


def test_export_splits_like_meta_and_round_trips_bit_exactly(tmp_path):
    model = random_model(GQA)
    expected = write_meta_folder(tmp_path / "reference", model, n_shards=2)
    export(tmp_path / "ours", model, format="meta", shards=2)
    for rank in range(2):
        ours = torch.load(tmp_path / "ours" / f"consolidated.{rank:02d}.pth", weights_only=True)
        reference = {k: v for k, v in expected[rank].items() if k != "rope.freqs"}
        assert ours.keys() == reference.keys()
        assert all(torch.equal(ours[k], reference[k]) for k in ours)
    params = json.loads((tmp_path / "ours" / "params.json").read_text())
    assert params["n_kv_heads"] == 2 and "max_seq_len" not in params  # Meta's ModelArgs would reject it
    back, _, _ = load_model(tmp_path / "ours", max_seq_len=GQA.max_seq_len)
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
