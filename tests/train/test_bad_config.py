"""Bad training input: one line naming the problem, non-zero exit, nothing written."""

from tests.helpers import assert_user_error, tiny_train_args


def test_missing_data_folder(tmp_path, cli):
    result = cli(
        "train",
        "--data.tokens",
        str(tmp_path / "none"),
        "--train.steps",
        "2",
        "--output.dir",
        str(tmp_path / "out"),
    )
    assert_user_error(result, "none does not exist")
    assert not (tmp_path / "out").exists()


def test_empty_corpus(tmp_path, shakespeare_tokens, cli):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    tokenizer = str(shakespeare_tokens / "tokenizer.model")
    result = cli(
        "data", "tokenize", str(empty), "--tokenizer", tokenizer, "--output", str(tmp_path / "tokens")
    )
    assert_user_error(result, "no text to train on")
    assert not (tmp_path / "tokens" / "manifest.json").exists()
    result = cli(
        "data",
        "tokenize",
        str(empty),
        "--tokenizer",
        str(tmp_path / "nope.model"),
        "--output",
        str(tmp_path / "tokens"),
    )
    assert_user_error(result, "nope.model not found")


def test_unknown_key_and_wrong_type_in_the_config_file(tmp_path, cli):
    config = tmp_path / "run.toml"
    config.write_text("[train]\nsteps = 10\nlearning_rate = 0.1\n")
    assert_user_error(cli("train", "--config", str(config)), "unknown key train.learning_rate")
    config.write_text('[train]\nsteps = "ten"\n')
    assert_user_error(cli("train", "--config", str(config)), "train.steps must be int, got 'ten'")
    config.write_text("[train\nsteps = 1\n")
    assert_user_error(cli("train", "--config", str(config)), "is not valid TOML")
    assert_user_error(
        cli("train", "--train.precision", "fp8", "--train.steps", "1", "--data.tokens", "x"),
        "train.precision must be one of auto, bf16, fp32",
    )
    assert_user_error(
        cli("train", "--train.steps", "1", "--train.max_minutes", "2", "--data.tokens", "x"),
        "exactly one of train.steps, train.tokens, train.max_minutes",
    )


def test_tensor_parallel_refuses_a_tied_model_in_one_line(shakespeare_tokens, tmp_path, cli):
    args = tiny_train_args(
        shakespeare_tokens, tmp_path / "run", parallel__tp=2, model__tie_embeddings="true", train__steps=1
    )
    assert_user_error(cli(*args), "parallel.tp > 1 is not supported for a model with tied embeddings")


def test_a_written_config_reads_back_equal(tmp_path):
    from llamafoundry.train.recipe import load_run_recipe
    from tests.conftest import REPO

    config = load_run_recipe(
        REPO / "configs" / "tiny-cpu.toml", ["--model.n_kv_heads", "4", "--train.lr", "1e-3"]
    )
    (tmp_path / "run.toml").write_text(config.to_toml())
    assert load_run_recipe(tmp_path / "run.toml") == config
