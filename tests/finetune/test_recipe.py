"""The finetuning recipe: configs/finetune.toml is the default, and what a finetune cannot take is one line."""

import json

import pytest

from llamafoundry.finetune.recipe import load_finetune_recipe
from tests.conftest import REPO
from tests.finetune.conftest import finetune_args
from tests.helpers import assert_user_error


def test_the_shipped_recipe_is_the_default():
    shipped = load_finetune_recipe(REPO / "configs" / "finetune.toml")
    assert shipped == load_finetune_recipe(None)
    assert (shipped.train.lr, shipped.data.epochs, shipped.lora.rank) == (2e-5, 2.0, 0)
    assert shipped.train.batch_tokens // shipped.data.seq_len == 64


@pytest.fixture
def data(tmp_path, alpaca):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(alpaca[:20]))
    return path


@pytest.mark.parametrize(
    "settings, fragments",
    [
        ({"model__dim": 128}, ["model.dim", "base model's shape"]),
        ({"lora__rank": 8, "lora__alpha": 0}, ["lora.alpha must be a finite number > 0"]),
        ({"data__held_out": 20}, ["20 conversations", "lower data.held_out"]),
        ({"data__seq_len": 4096}, ["data.seq_len 4096", "max_seq_len 128"]),
        ({"data__format": "csv"}, ["data.format must be one of"]),
        ({"data__colour": "red"}, ["unknown key data.colour"]),
    ],
    ids=["model shape", "lora", "held out", "seq_len", "format", "unknown key"],
)
def test_settings_a_finetune_cannot_take_are_one_line(settings, fragments, base_model, data, tmp_path, cli):
    result = cli(*finetune_args(base_model, [data], tmp_path / "out", **settings))
    assert_user_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_no_data_is_one_line(base_model, tmp_path, cli):
    assert_user_error(cli("finetune", base_model, "-o", tmp_path / "out"), "--data FILE")
