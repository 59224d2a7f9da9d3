"""`llamafoundry finetune --lora RANK [--merge]`: only the adapters train, they are saved alone in PEFT's
format, the merged model is base + adapters, an interrupted LoRA run resumes exactly, bad targets are one line."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.config import RopeScaling
from llamafoundry.finetune.lora import load_adapters
from llamafoundry.model import Transformer
from llamafoundry.train.metrics import read_metrics
from tests.finetune.conftest import finetune_args
from tests.helpers import assert_user_error, run_cli


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory, alpaca):
    path = tmp_path_factory.mktemp("data") / "alpaca48.json"
    path.write_text(json.dumps(alpaca[:48]))
    return path


def lora_args(base, data, out, *extra: str, **settings) -> list[str]:
    settings = {"checkpoint__every": 6, "checkpoint__keep": 0, "train__lr": 1e-2} | settings
    return [*finetune_args(base, data, out, **settings), "--lora", "4", *extra]


@pytest.fixture(scope="module")
def merged_run(tmp_path_factory, base_model, alpaca_file):
    out = tmp_path_factory.mktemp("lora") / "run"
    done = run_cli(*lora_args(base_model, [alpaca_file], out, "--merge"))
    assert done.returncode == 0, done.stderr
    return out


def test_lora_lowers_the_held_out_loss_and_trains_only_the_adapters(merged_run, base_model):
    val = [r for r in read_metrics(merged_run / "metrics.jsonl") if r["kind"] == "val"]
    assert val[-1]["loss"] < val[0]["loss"] - 0.1
    adapters = merged_run / "adapters"
    assert {p.name for p in adapters.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((adapters / "adapter_config.json").read_text())["r"] == 4
    # Weights no adapter touches (embeddings, norms, the output head) are the base's, bit for bit.
    base = load_file(str(base_model / "model.safetensors"))
    merged = load_file(str(merged_run / "model" / "model.safetensors"))
    untouched = [k for k in base if not k.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight"))]
    untouched = [k for k in untouched if not k.endswith(("w1.weight", "w2.weight", "w3.weight"))]
    assert untouched and all(torch.equal(base[k], merged[k]) for k in untouched)
    assert not torch.equal(base["layers.0.attention.wq.weight"], merged["layers.0.attention.wq.weight"])
    assert "LoRA rank 4" in (merged_run / "report.md").read_text()


def test_the_merged_model_is_the_base_with_the_saved_adapters(merged_run, base_model):
    merged, _, _ = load_model(merged_run / "model")
    base, _, _ = load_model(base_model)
    adapted = load_adapters(merged_run / "adapters", base)
    tokens = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (merged(tokens) - adapted(tokens)).abs().max().item() < 1e-5


def test_a_lora_checkpoint_is_a_model_folder_of_the_merged_model(merged_run):
    """`info`, `eval`, `generate` read a LoRA run's checkpoint as the model it stands for: adapters merged."""
    merged, _, _ = load_model(merged_run / "model")
    final, _, _ = load_model(merged_run / "checkpoints" / "step_00000012")
    midway, _, _ = load_model(merged_run / "checkpoints" / "step_00000006")
    tokens = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (final(tokens) - merged(tokens)).abs().max().item() < 1e-5
        assert (midway(tokens) - merged(tokens)).abs().max().item() > 1e-4


def test_without_merge_only_the_adapters_are_written(tmp_path, base_model, alpaca_file):
    out = tmp_path / "run"
    done = run_cli(*lora_args(base_model, [alpaca_file], out, train__steps=2))
    assert done.returncode == 0, done.stderr
    assert (out / "adapters" / "adapter_model.safetensors").is_file() and not (out / "model").exists()
    assert "adapters in" in done.stdout


def test_an_interrupted_lora_run_resumes_exactly(tmp_path, merged_run, base_model, alpaca_file):
    """The run stopped after its step-6 checkpoint (later files removed) and resumed: the same adapters."""
    out = tmp_path / "run"
    shutil.copytree(merged_run, out)
    for later in ("checkpoints/step_00000012", "adapters", "model", "report.md"):
        path = out / later
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    done = run_cli(*lora_args(base_model, [alpaca_file], out, "--merge"), "--resume")
    assert done.returncode == 0, done.stderr
    resumed = load_file(str(out / "adapters" / "adapter_model.safetensors"))
    straight = load_file(str(merged_run / "adapters" / "adapter_model.safetensors"))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_a_lora_target_the_model_lacks_is_one_line(tmp_path, base_model, alpaca_file):
    out = tmp_path / "run"
    done = run_cli(*lora_args(base_model, [alpaca_file], out, lora__targets="wq,q_proj"))
    assert_user_error(done, "'q_proj' is not a linear layer", "wq, wk, wv, wo, w1, w2, w3, output")
    assert not out.exists()


@pytest.mark.distributed
def test_a_two_rank_fsdp_lora_finetune_trains_like_one_rank(tmp_path, base_model, alpaca_file):
    """FSDP2 over 2 gloo ranks shards the adapted model; without dropout (whose masks differ by rank) the
    losses and the saved adapters match one rank's."""
    from tests.train.test_distributed import torchrun

    runs = {n: tmp_path / f"ranks{n}" for n in (1, 2)}
    args = {
        n: lora_args(base_model, [alpaca_file], out, "--merge", lora__dropout=0) for n, out in runs.items()
    }
    assert run_cli(*args[1]).returncode == 0
    done = torchrun(2, "-m", "llamafoundry.cli", *args[2])
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (
        [r["loss"] for r in read_metrics(runs[n] / "metrics.jsonl") if r["kind"] == "train"] for n in (1, 2)
    )
    assert two == pytest.approx(one, abs=1e-4)
    one, two = (load_file(str(runs[n] / "adapters" / "adapter_model.safetensors")) for n in (1, 2))
    assert two.keys() == one.keys() and all(torch.allclose(two[k], one[k], atol=1e-4) for k in two)
    assert (runs[2] / "model" / "model.safetensors").is_file()


def test_a_llama32_shaped_tied_base_finetunes_with_lora_into_a_tied_model(
    base_model, alpaca_file, tmp_path, cli
):
    # Llama 3.2's shape: its output is its embedding table, and its rotary frequencies are scaled.
    model, tokenizer, cfg = load_model(base_model)
    tied_cfg = cfg.replace(
        tie_embeddings=True, rope_scaling=RopeScaling(factor=32.0, original_max_position_embeddings=64)
    )
    tied = Transformer(tied_cfg)
    tied.load_state_dict({k: v for k, v in model.state_dict().items() if k != "output.weight"}, strict=False)
    base = save_model(tmp_path / "base", tied, tokenizer)
    done = cli(*lora_args(base, [alpaca_file], tmp_path / "run", "--merge", train__steps=4))
    assert done.returncode == 0, done.stderr
    merged, _, merged_cfg = load_model(tmp_path / "run" / "model")
    assert merged_cfg == tied_cfg and merged.output.weight is merged.tok_embeddings.weight
    adapted = load_adapters(tmp_path / "run" / "adapters", load_model(base)[0])
    tokens = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (merged(tokens) - adapted(tokens)).abs().max().item() < 1e-5
