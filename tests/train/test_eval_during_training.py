"""Evaluation during training (the paper's Figure 2): `[eval] tasks` scores benchmarks on the live model at
every validation, and every checkpoint folder is a model folder that `eval`, `info`, `generate` and `convert`
read in one process, so a mid-run checkpoint evaluates to the scores the run logged at its step."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from llamafoundry.checkpoint import load_model
from llamafoundry.data.shards import build_shards
from llamafoundry.train import load_run_recipe, train
from tests.helpers import assert_user_error, tiny_train_args

TASKS, LIMIT = "hellaswag,piqa", 12
KEYS = {f"eval/{task}/{metric}" for task in TASKS.split(",") for metric in ("acc", "acc_norm")}


def run_args(tokens, out, data_dir, **settings) -> list[str]:
    """A 4-step tiny run validating (and checkpointing) at steps 2 and 4, scoring TASKS each time; the
    model's context fits HellaSwag's endings in the 512-piece tokenizer."""
    values = dict(
        train__steps=4,
        model__max_seq_len=512,
        eval__every=2,
        eval__tasks=TASKS,
        eval__limit=LIMIT,
        eval__data_dir=data_dir,
        checkpoint__every=2,
        checkpoint__keep=5,
    )
    return tiny_train_args(tokens, out, **(values | settings))


def val_records(run) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["kind"] == "val"}


def evaluated(cli, model, data_dir, out) -> dict[str, float]:
    """`llamafoundry eval MODEL` on TASKS, as eval/<task>/<metric> keys."""
    done = cli("eval", model, "--tasks", TASKS, "--limit", LIMIT, "--data-dir", data_dir, "-o", out)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["results"]
    return {f"eval/{r['task']}/{name}": value for r in results for name, value in r["metrics"].items()}


@pytest.fixture(scope="module")
def run(shakespeare_tokens, shared_data, tmp_path_factory):
    """A finished single-process run with benchmark scores at steps 2 and 4."""
    out = tmp_path_factory.mktemp("benchmarks") / "run"
    train(load_run_recipe(None, run_args(shakespeare_tokens, out, shared_data)[1:]))
    return out


def test_every_validation_logs_benchmark_scores_and_the_curve(run):
    val = val_records(run)
    assert sorted(val) == [2, 4]
    for record in val.values():
        assert record.keys() >= KEYS
        assert all(0.0 <= record[key] <= 1.0 for key in KEYS)
    assert (run / "benchmarks_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(run.glob("*.tmp*"))  # written through a temporary file, which is gone
    report = (run / "report.md").read_text()
    assert (
        "benchmarks at step 4" in report
        and f"hellaswag/acc_norm {val[4]['eval/hellaswag/acc_norm']:.4f}" in report
    )


def test_a_mid_run_checkpoint_evaluates_to_the_scores_logged_at_its_step(run, shared_data, tmp_path, cli):
    scores = evaluated(cli, run / "checkpoints" / "step_00000002", shared_data, tmp_path / "mid")
    logged = val_records(run)
    assert scores == {key: logged[2][key] for key in KEYS}
    # The final model scored differently, so matching step 2 is no accident of an untrained model.
    assert any(logged[2][key] != logged[4][key] for key in KEYS)


@pytest.fixture(scope="module")
def tokens_without_val_split(shakespeare_tokens, tmp_path_factory):
    """The Shakespeare shards again with no held-out split: validation then runs no forward of its own,
    so the benchmarks are the first forward after a backward resharded FSDP's root weights."""
    source = shakespeare_tokens.parent  # the fixture's documents and tokenizer
    out = tmp_path_factory.mktemp("no-val") / "tokens"
    build_shards(
        {"books": [source / "docs.jsonl"]}, source / "tokenizer.model", out, val_fraction=0.0, workers=1
    )
    return out


@pytest.mark.distributed
def test_a_two_rank_fsdp_checkpoint_evaluates_to_the_scores_logged_at_its_step(
    tokens_without_val_split, shared_data, tmp_path, cli
):
    out = tmp_path / "run"
    args = run_args(tokens_without_val_split, out, shared_data, parallel__dp_shard=2)
    result = torchrun(2, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    logged = val_records(out)
    assert sorted(logged) == [2, 4]  # training went on after the sharded model was scored
    assert evaluated(cli, checkpoint, shared_data, tmp_path / "mid") == {key: logged[2][key] for key in KEYS}


@pytest.mark.distributed
def test_a_generation_task_is_refused_before_a_sharded_run_starts(shakespeare_tokens, shared_data, tmp_path):
    out = tmp_path / "run"
    args = run_args(shakespeare_tokens, out, shared_data, parallel__dp_shard=2, eval__tasks="piqa,nq_open")
    result = torchrun(2, *args)
    assert result.returncode != 0
    assert "eval.tasks nq_open generate text" in result.stderr
    assert not (out / "metrics.jsonl").exists()


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, "-m", "llamafoundry.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_info_generate_and_convert_read_a_checkpoint_folder(run, tmp_path, cli):
    checkpoint = run / "checkpoints" / "step_00000002"
    info = cli("info", checkpoint)
    assert info.returncode == 0, info.stderr
    assert "format:     checkpoint" in info.stdout and "tokenizer:  512 pieces" in info.stdout
    done = cli("generate", checkpoint, "To be", "--max-new-tokens", "4", "--seed", "1")
    assert done.returncode == 0 and done.stdout.startswith("To be"), done.stderr

    model, tokenizer, _ = load_model(checkpoint)
    assert tokenizer is not None and tokenizer.vocab_size == 512  # the run's own tokenizer.model
    tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(tokens)
        for fmt in ("hf", "native"):
            done = cli("convert", checkpoint, "--to", fmt, "-o", tmp_path / fmt)
            assert done.returncode == 0, done.stderr
            converted, converted_tokenizer, _ = load_model(tmp_path / fmt)
            assert converted_tokenizer is not None
            assert torch.equal(converted(tokens), expected), fmt
    # A mid-run checkpoint holds the weights of its step, not the final ones.
    final, _, _ = load_model(run / "model")
    with torch.no_grad():
        assert not torch.equal(final(tokens), expected)


def test_eval_tasks_are_a_typed_list_that_round_trips(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[eval]\ntasks = ["hellaswag", "arc_*"]\nlimit = 50\nshots = 0\n')
    recipe = load_run_recipe(path)
    assert recipe.eval.tasks == ["hellaswag", "arc_*"] and recipe.eval.limit == 50
    again = tmp_path / "again.toml"
    again.write_text(recipe.to_toml())
    assert load_run_recipe(again) == recipe
    assert load_run_recipe(None, ["--eval.tasks", "piqa, siqa"]).eval.tasks == ["piqa", "siqa"]


def test_an_unknown_task_is_one_line_naming_the_known_ones(shakespeare_tokens, shared_data, tmp_path, cli):
    args = run_args(shakespeare_tokens, tmp_path / "run", shared_data, eval__tasks="hellaswag,hellaswagg")
    assert_user_error(cli(*args), "eval.tasks: unknown task 'hellaswagg'", "known tasks: ", "piqa")
    assert not (tmp_path / "run").exists()
    path = tmp_path / "recipe.toml"
    path.write_text('[eval]\ntasks = "hellaswag"\n')
    assert_user_error(cli("train", "--config", path), "eval.tasks must be a list of str")


def test_a_partial_checkpoint_is_one_line(run, tmp_path, cli):
    partial = tmp_path / "step_00000002.tmp"
    shutil.copytree(run / "checkpoints" / "step_00000002", partial)
    (partial / "trainer_state.json").unlink()  # written last: an interrupted save has none
    assert_user_error(cli("info", partial), "incomplete checkpoint")
    assert_user_error(cli("eval", partial, "--tasks", "piqa"), "incomplete checkpoint")


def test_a_tampered_checkpoint_is_refused_before_anything_is_unpickled(run, tmp_path, cli):
    folder = tmp_path / "step_00000002"
    shutil.copytree(run / "checkpoints" / "step_00000002", folder)
    marker = tmp_path / "pwned"
    planted = pickle.dumps(_OpensAFile(str(marker)))
    (folder / ".metadata").write_bytes(planted)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][".metadata"]["bytes"] = len(planted)  # the size fits; the sha256 does not
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(cli("info", folder), ".metadata differs from what was saved")
    assert not marker.exists()
    (folder / "manifest.json").unlink()
    assert_user_error(cli("convert", folder, "-o", tmp_path / "out"), "has no manifest.json")
    assert not marker.exists()


class _OpensAFile:
    """Unpickling it creates `path`: what a planted .metadata could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
