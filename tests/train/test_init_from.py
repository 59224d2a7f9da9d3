"""Continued pretraining (`train --init-from MODEL`, `[model] init_from`): a run starts from the weights of
any model folder load_model reads, in the folder's shape, with its tokenizer, and otherwise runs as any
run does (resume, FSDP); a folder that does not fit the recipe or the data is one line, nothing written."""

import math
import shutil

import pytest
import torch

from llamafoundry.checkpoint import export, load_model, save_model
from llamafoundry.data.loader import TokenLoader
from llamafoundry.tokenizer import train_tokenizer
from llamafoundry.train import Trainer, load_run_recipe, train
from llamafoundry.train.loss import lm_loss
from tests.helpers import assert_user_error, tiny_train_args, train_losses, write_llama2c
from tests.train.test_distributed import train as torchrun_train


@pytest.fixture(scope="module")
def base(shakespeare_tokens, tmp_path_factory):
    """A finished 20-step run on the fixture's shards (the dim-64 model of tiny_train_args)."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(load_run_recipe(None, tiny_train_args(shakespeare_tokens, out, train__steps=20)[1:]))
    return out


@pytest.fixture(scope="module")
def hf(base, tmp_path_factory):
    """The base run's model as a Hugging Face folder, written by our exporter."""
    model, tokenizer, _ = load_model(base / "model")
    return export(tmp_path_factory.mktemp("hf") / "llama", model, tokenizer, "hf")


def first_batch_loss(folder, tokens) -> float:
    """The loss of the model at `folder` on the first global batch a tiny_train_args run draws: 2
    accumulation steps of 8 windows of 64 tokens, by a plain forward."""
    model, _, _ = load_model(folder)
    first = TokenLoader(tokens, 64, 8, split="train", accum=2, seed=0).next_step()
    with torch.no_grad():
        return sum(float(lm_loss(model, micro)) for micro in first) / len(first)


def test_a_run_from_an_hf_folder_starts_at_its_loss_and_keeps_its_tokenizer(
    cli, hf, shakespeare_tokens, tmp_path
):
    out = tmp_path / "run"
    # A recipe may set the context it trains at (the folder's is 64): rotary tables hold no weights.
    args = tiny_train_args(shakespeare_tokens, out, train__steps=2, model__max_seq_len=128)
    done = cli(*args, "--init-from", hf)
    assert done.returncode == 0, done.stderr
    assert load_model(out / "model")[2].max_seq_len == 128
    expected = first_batch_loss(hf, shakespeare_tokens)
    assert train_losses(out)[1] == pytest.approx(expected, rel=1e-5)
    assert expected < math.log(512) - 0.5  # the folder's learned weights, not a fresh model's ~ln(vocab)
    tokenizer = (hf / "tokenizer.model").read_bytes()
    assert (out / "tokenizer.model").read_bytes() == tokenizer
    assert (out / "model" / "tokenizer.model").read_bytes() == tokenizer


@pytest.mark.distributed
def test_a_two_rank_fsdp_run_starts_at_the_same_loss(hf, shakespeare_tokens, tmp_path):
    out = tmp_path / "run"
    torchrun_train(2, shakespeare_tokens, out, "--init-from", str(hf), train__steps=1)
    assert train_losses(out)[1] == pytest.approx(first_batch_loss(hf, shakespeare_tokens), abs=1e-5)


def folder_of(fmt: str, base, tmp_path):
    """The base run's model as a folder (or llama2.c file) of `fmt`."""
    if fmt == "checkpoint":
        return base / "checkpoints" / "step_00000020"
    model, tokenizer, _ = load_model(base / "model")
    if fmt == "llama2c":  # a classifier shared with the embedding, norm_eps 1e-5, no tokenizer
        return write_llama2c(tmp_path / "model.bin", model)
    return export(tmp_path / fmt, model, tokenizer, fmt)


@pytest.mark.parametrize("fmt", ["native", "meta", "llama2c", "checkpoint"])
def test_a_recipe_naming_only_init_from_takes_the_folders_shape_and_weights(
    fmt, base, shakespeare_tokens, tmp_path
):
    source = folder_of(fmt, base, tmp_path)
    config = tmp_path / "recipe.toml"
    config.write_text(
        f'[model]\ninit_from = "{source}"\n\n[data]\ntokens = "{shakespeare_tokens}"\nseq_len = 64\n\n'
        f'[train]\nsteps = 1\nbatch_tokens = 1024\nprecision = "fp32"\n\n[output]\ndir = "{tmp_path / "run"}"\n'
    )
    recipe = load_run_recipe(config)
    assert recipe.to_toml().count(str(source)) == 1  # the run's config.toml names where it started
    trainer = Trainer(recipe)
    loaded, _, cfg = load_model(source)
    assert trainer.model_cfg == cfg
    state = trainer.model.state_dict()
    assert all(torch.equal(state[name], w) for name, w in loaded.state_dict().items())


def test_a_resumed_run_continues_from_its_checkpoint(cli, hf, shakespeare_tokens, tmp_path):
    # The issue's spelling, --model.init_from; a restart from the folder would repeat step 1's loss at step 3.
    common = {"train__steps": 4, "checkpoint__every": 2, "checkpoint__keep": 5, "model__init_from": hf}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert cli(*tiny_train_args(shakespeare_tokens, whole, **common)).returncode == 0
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step_00000004")
    shutil.rmtree(cut / "model")
    done = cli(*tiny_train_args(shakespeare_tokens, cut, **common), "--resume")
    assert done.returncode == 0, done.stderr
    a, b = train_losses(whole), train_losses(cut)
    assert sorted(b) == [1, 2, 3, 4]
    assert all(b[step] == pytest.approx(a[step], abs=1e-6) for step in a), (a, b)


def test_a_recipe_of_another_shape_is_one_line_naming_the_fields(cli, hf, shakespeare_tokens, tmp_path):
    out = tmp_path / "run"
    done = cli(
        *tiny_train_args(shakespeare_tokens, out, train__steps=2, model__dim=128, model__n_layers=3),
        "--init-from",
        hf,
    )
    assert_user_error(done, f"model.init_from {hf}", "dim 128 vs 64", "n_layers 3 vs 2")
    assert not out.exists()


def test_a_missing_folder_is_one_line(cli, shakespeare_tokens, tmp_path):
    out = tmp_path / "run"
    done = cli(*tiny_train_args(shakespeare_tokens, out, train__steps=2), "--init-from", tmp_path / "nowhere")
    assert_user_error(done, f"model.init_from {tmp_path / 'nowhere'} does not exist")
    assert not out.exists()


def test_shards_of_another_tokenizer_are_one_line(cli, hf, shared_data, shakespeare_tokens, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(hf, other)
    (other / "tokenizer.model").unlink()
    text = shared_data / "corpora" / "tinyshakespeare" / "input.txt"
    train_tokenizer([text], other / "tokenizer.model", vocab_size=400, input_sentence_size=2000)
    out = tmp_path / "run"
    done = cli(*tiny_train_args(shakespeare_tokens, out, train__steps=2), "--init-from", other)
    assert_user_error(done, f"data.tokens {shakespeare_tokens} was not made with", "tokenizer")
    assert not out.exists()


def test_a_quantized_folder_is_one_line(cli, base, shakespeare_tokens, tmp_path):
    model, tokenizer, _ = load_model(base / "model", quantize="int8")
    quantized = save_model(tmp_path / "int8", model, tokenizer)
    out = tmp_path / "run"
    done = cli(*tiny_train_args(shakespeare_tokens, out, train__steps=2), "--init-from", quantized)
    assert_user_error(done, f"model.init_from {quantized} is a quantized model")
    assert not out.exists()
