"""The Trainer's hooks, on real tiny runs: on_validate metrics land in metrics.jsonl; init_state starts a run
from existing weights, is shape-checked, and gives way to a checkpoint when resuming."""

import json
import shutil

import pytest
import torch

from llamafoundry.checkpoint import load_model
from llamafoundry.data.loader import TokenLoader
from llamafoundry.errors import UserError
from llamafoundry.train import RunRecipe, Trainer, load_run_recipe, train
from llamafoundry.train.loss import lm_loss
from tests.helpers import random_model, tiny_train_args


def recipe(tokens, out, **settings) -> RunRecipe:
    """The recipe `llamafoundry train` builds from tiny_train_args (a dim-64, 2-layer fp32 model)."""
    return load_run_recipe(None, tiny_train_args(tokens, out, **settings)[1:])


def records(out, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def base_run(shakespeare_tokens, tmp_path_factory):
    """A finished 20-step run: its folder, with checkpoints and the model folder."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(recipe(shakespeare_tokens, out, train__steps=20))
    return out


def test_on_validate_metrics_join_the_validation_record(shakespeare_tokens, tmp_path):
    batch = torch.randint(0, 512, (2, 65), generator=torch.Generator().manual_seed(0))
    calls = []

    def probe(trainer, step, record):
        calls.append((step, trainer.model.training, record["loss"]))
        with torch.no_grad():
            return {"probe_loss": float(lm_loss(trainer.model, batch.to(trainer.rt.device)))}

    out = tmp_path / "run"
    train(recipe(shakespeare_tokens, out, train__steps=4, eval__every=2), on_validate=[probe])
    val = records(out, "val")
    assert [(r["step"], r["loss"]) for r in val] == [(step, loss) for step, _, loss in calls]
    assert [step for step, _, _ in calls] == [2, 4]
    assert not any(training for _, training, _ in calls)  # hooks see the model in eval mode
    # The live model: at the last validation the probe measured the weights the run then saved.
    final, _, _ = load_model(out / "model")
    with torch.no_grad():
        assert val[-1]["probe_loss"] == pytest.approx(float(lm_loss(final, batch)), rel=1e-4)
    assert val[0]["probe_loss"] != val[-1]["probe_loss"]


def test_an_on_validate_hook_cannot_overwrite_the_measured_loss(shakespeare_tokens, tmp_path):
    trainer = Trainer(
        recipe(shakespeare_tokens, tmp_path / "run", train__steps=1), on_validate=[lambda *_: {"loss": 0.0}]
    )
    with pytest.raises(ValueError, match="loss"):
        trainer.validate()


def test_a_run_from_saved_weights_starts_at_their_loss(base_run, shakespeare_tokens, tmp_path):
    base, _, _ = load_model(base_run / "model")
    state = base.state_dict()
    tuned = Trainer(recipe(shakespeare_tokens, tmp_path / "tuned", train__steps=2), init_state=state)
    assert all(torch.equal(tuned.model.state_dict()[name].cpu(), w) for name, w in state.items())

    # The same first global batch the trainer draws: 2 accumulation steps of 8 windows of 64 tokens.
    first = TokenLoader(shakespeare_tokens, 64, 8, split="train", accum=2, seed=0).next_step()
    with torch.no_grad():
        expected = sum(float(lm_loss(base, micro)) for micro in first) / len(first)
    start = tuned.step()["loss"]
    assert start == pytest.approx(expected, rel=1e-4)
    fresh = Trainer(recipe(shakespeare_tokens, tmp_path / "fresh", train__steps=2)).step()["loss"]
    assert start < fresh - 0.5, (start, fresh)


def test_weights_of_another_shape_are_a_one_line_user_error(base_run, shakespeare_tokens, tmp_path):
    state = load_model(base_run / "model")[0].state_dict()
    with pytest.raises(UserError) as error:
        Trainer(
            recipe(shakespeare_tokens, tmp_path / "wide", train__steps=2, model__dim=128), init_state=state
        )
    message = str(error.value)
    assert "\n" not in message and message.startswith("init_state: tensor ")
    assert "(512, 64)" in message and "(512, 128)" in message
    assert not (tmp_path / "wide").exists()


def test_a_resumed_run_continues_from_its_checkpoint_not_init_state(base_run, shakespeare_tokens, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    saved = load_model(out / "model")[0].state_dict()
    other = random_model(recipe(shakespeare_tokens, out).model_config(), seed=1).state_dict()
    resumed = Trainer(recipe(shakespeare_tokens, out, train__steps=20), resume=True, init_state=other)
    assert resumed.progress.step == 20
    assert all(torch.equal(resumed.model.state_dict()[name].cpu(), w) for name, w in saved.items())
