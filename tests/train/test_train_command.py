"""`llamafoundry train` speaks the CLI's one grammar: `-o/--output` is the run folder, `--device` the device."""

from llamafoundry.checkpoint import load_model


def test_train_writes_its_run_to_dash_o_on_the_given_device(tmp_path, shakespeare_tokens, cli):
    out = tmp_path / "run"
    done = cli(
        "train",
        "--model.preset",
        "llama-1m",
        "--model.vocab_size",
        "512",
        "--data.tokens",
        shakespeare_tokens,
        "--data.seq_len",
        "64",
        "--train.micro_batch",
        "2",
        "--train.batch_tokens",
        "128",
        "--train.steps",
        "2",
        "--output.tensorboard",
        "false",
        "-o",
        out,
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "metrics.jsonl").is_file()
    model, tokenizer, cfg = load_model(out / "model")
    assert cfg.vocab_size == 512 and tokenizer is not None
    assert model.tok_embeddings.weight.device.type == "cpu"
