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
        "--footprint.power_w",
        "250",
        "--footprint.carbon_intensity",
        "0.06",
    )
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.jsonl").is_file()
    # The report states the Sec. 6 formula with the inputs given (the paper's PUE by default).
    report = (out / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- footprint"))
    assert "device-hours x 250 W x PUE 1.1 =" in line and "MWh" in line and "x 0.06 tCO2eq/MWh" in line
    model, tokenizer, cfg = load_model(out / "model")
    assert cfg.vocab_size == 512 and tokenizer is not None
    assert model.tok_embeddings.weight.device.type == "cpu"


def test_footprint_inputs_are_checked(tmp_path, shakespeare_tokens, cli):
    for flag, value in (("pue", "0.5"), ("carbon_intensity", "-1"), ("power_w", "nan")):
        done = cli(
            "train", "--data.tokens", shakespeare_tokens, f"--footprint.{flag}", value, "-o", tmp_path / flag
        )
        assert done.returncode != 0 and f"footprint.{flag}" in done.stderr, (flag, done.stderr)
        assert "Traceback" not in done.stderr
