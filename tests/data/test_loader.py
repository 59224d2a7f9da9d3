"""Token shards and the loader: exact windows, deterministic mixing, rank slices, exact resume, checksums."""

import json

import numpy as np
import pytest
import zstandard

from llamafoundry.data.loader import TokenLoader, permute
from llamafoundry.data.shards import build_shards, read_manifest, token_dtype
from llamafoundry.errors import UserError
from llamafoundry.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("corpus")
    text = (shared_data / "corpora" / "tinyshakespeare" / "input.txt").read_text()
    tok = train_tokenizer(
        [shared_data / "corpora" / "tinyshakespeare" / "input.txt"], folder / "tok.model", vocab_size=400
    )
    paragraphs = text.split("\n\n")
    books = folder / "books.jsonl"
    books.write_text(
        "".join(json.dumps({"id": f"b{i}", "text": t}) + "\n" for i, t in enumerate(paragraphs[:800]))
    )
    code = folder / "code.jsonl.zst"
    lines = "".join(
        json.dumps({"id": f"c{i}", "text": t.upper()}) + "\n" for i, t in enumerate(paragraphs[800:1400])
    )
    code.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    plain = folder / "story.txt"
    plain.write_text("<|endoftext|>".join(paragraphs[1400:1500]))
    shards = folder / "tokens"
    build_shards(
        {"books": [books], "github": [code], "wikipedia": [plain]},
        folder / "tok.model",
        shards,
        val_fraction=0.1,
        workers=2,
        doc_separator="<|endoftext|>",
    )
    return {"tokens": shards, "tokenizer": tok, "paragraphs": paragraphs}


def test_shards_hold_each_document_as_bos_tokens_eos(corpus):
    manifest = read_manifest(corpus["tokens"])
    tok = corpus["tokenizer"]
    assert manifest["dtype"] == "uint16" and token_dtype(70_000) == np.dtype("<u4")
    assert (corpus["tokens"] / "tokenizer.model").read_bytes() == tok.serialized()
    decoded = []
    for split in ("train", "val"):
        shard = manifest["splits"][split]["books"][0]
        stream = np.fromfile(corpus["tokens"] / shard["path"], dtype="<u2")
        assert len(stream) == shard["tokens"]
        docs = np.split(stream, np.nonzero(stream == tok.eos_id)[0] + 1)[:-1]
        assert len(docs) == shard["documents"]
        assert all(d[0] == tok.bos_id and d[-1] == tok.eos_id for d in docs)
        decoded += [tok.decode(d[1:-1].tolist()) for d in docs]
    assert sorted(decoded) == sorted(corpus["paragraphs"][:800])


def test_validation_split_is_held_out_by_document(corpus):
    manifest = read_manifest(corpus["tokens"])
    train_docs = sum(s["documents"] for s in manifest["splits"]["train"]["books"])
    val_docs = sum(s["documents"] for s in manifest["splits"]["val"]["books"])
    assert train_docs + val_docs == 800
    assert 0.05 < val_docs / 800 < 0.15


def test_windows_are_contiguous_stream_tokens(corpus):
    loader = TokenLoader(corpus["tokens"], seq_len=32, micro_batch=4, weights={"books": 1.0})
    manifest = read_manifest(corpus["tokens"])
    stream = np.fromfile(corpus["tokens"] / manifest["splits"]["train"]["books"][0]["path"], dtype="<u2")
    windows = {tuple(stream[i * 32 : i * 32 + 33]) for i in range((len(stream) - 1) // 32)}
    batch = loader.next_step()
    assert batch.shape == (1, 4, 33)
    assert all(tuple(row.tolist()) in windows for row in batch[0])


def test_same_seed_same_batches_other_seed_other_batches(corpus):
    a = [TokenLoader(corpus["tokens"], 16, 8, seed=1).next_step() for _ in range(2)]
    b = TokenLoader(corpus["tokens"], 16, 8, seed=2).next_step()
    assert (a[0] == a[1]).all() and not (a[0] == b).all()


def test_mixing_follows_the_weights_exactly(corpus):
    weights = {"books": 0.5, "github": 0.3, "wikipedia": 0.2}
    loader = TokenLoader(corpus["tokens"], 16, 10, weights=weights)
    for _ in range(10):
        loader.next_step()
    assert loader.state.counts == {"books": 50, "github": 30, "wikipedia": 20}


def test_default_weights_are_table_1_renormalised(corpus):
    loader = TokenLoader(corpus["tokens"], 16, 4)
    assert loader.weights["books"] == pytest.approx(0.045 / 0.135)


def test_ranks_take_disjoint_slices_of_the_same_global_batch(corpus):
    single = TokenLoader(corpus["tokens"], 16, 4, accum=2, world_size=1, seed=3)
    ranks = [TokenLoader(corpus["tokens"], 16, 2, accum=2, rank=r, world_size=2, seed=3) for r in range(2)]
    for _ in range(3):
        whole = single.next_step().reshape(8, 17)
        parts = [loader.next_step().reshape(4, 17) for loader in ranks]
        assert (np.concatenate(parts) == whole.numpy()).all()


def test_restored_position_gives_the_uninterrupted_batches(corpus):
    straight = TokenLoader(corpus["tokens"], 16, 8, seed=5)
    batches = [straight.next_step() for _ in range(6)]
    first = TokenLoader(corpus["tokens"], 16, 8, seed=5)
    for _ in range(3):
        first.next_step()
    state = json.loads(json.dumps(first.state_dict()))  # it travels as JSON in checkpoints
    resumed = TokenLoader(corpus["tokens"], 16, 4, accum=2, seed=5)  # another layout, same global batch
    resumed.load_state_dict(state)
    for expected in batches[3:]:
        assert (resumed.next_step().reshape(8, 17) == expected.reshape(8, 17)).all()
    with pytest.raises(UserError, match="global batches of 8"):
        TokenLoader(corpus["tokens"], 16, 4, seed=5).load_state_dict(state)


def test_a_source_that_runs_out_starts_a_new_epoch_in_a_new_order(corpus):
    loader = TokenLoader(corpus["tokens"], 64, 1, weights={"wikipedia": 1.0})
    n = loader.sources["wikipedia"].windows
    epoch1 = [tuple(loader.next_step().flatten().tolist()) for _ in range(n)]
    epoch2 = [tuple(loader.next_step().flatten().tolist()) for _ in range(n)]
    assert len(set(epoch1)) == n and set(epoch1) == set(epoch2) and epoch1 != epoch2
    assert loader.epochs() == {"wikipedia": 2.0}


def test_feistel_permutation_is_a_bijection():
    for n in (1, 2, 7, 1000, 4099):
        assert sorted(permute(i, n, key=42) for i in range(n)) == list(range(n))
    assert [permute(i, 1000, 1) for i in range(10)] != [permute(i, 1000, 2) for i in range(10)]


def test_corrupt_and_truncated_shards_are_named(corpus, tmp_path):
    import shutil

    copy = tmp_path / "tokens"
    shutil.copytree(corpus["tokens"], copy)
    manifest = read_manifest(copy)
    shard = copy / manifest["splits"]["train"]["books"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{shard}.*sha256"):
        TokenLoader(copy, 16, 4)
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(UserError, match=f"{shard}.*truncated"):
        TokenLoader(copy, 16, 4, verify=False)


def test_bad_inputs_leave_no_shards(tmp_path, corpus):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text \xff\xfe broken")
    tokenizer = corpus["tokens"] / "tokenizer.model"
    with pytest.raises(UserError, match="bad.txt is not valid UTF-8"):
        build_shards({"books": [bad]}, tokenizer, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no text"):
        build_shards({"books": [empty]}, tokenizer, tmp_path / "out2", workers=1)
    with pytest.raises(UserError, match="does not exist"):
        TokenLoader(tmp_path / "nothing", 16, 4)
