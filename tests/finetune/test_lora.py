"""LoRA (issue 15): only adapters train, merging is exact, and adapter folders round-trip through us and HF PEFT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from llamafoundry.checkpoint import export, load_model
from llamafoundry.errors import UserError
from llamafoundry.finetune.lora import (
    LoraConfig,
    adapter_state_dict,
    add_lora,
    linear_names,
    load_adapters,
    merge_lora,
    save_adapters,
)
from llamafoundry.model import Transformer
from llamafoundry.train.loss import lm_loss
from llamafoundry.train.optim import OptimConfig, build_optimizer
from tests.helpers import GQA, MHA, random_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ALL_LINEAR = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "output")


def lora_model(cfg=GQA, targets=ALL_LINEAR, seed=0) -> Transformer:
    """A random model with adapters whose B is random too, so they change the logits."""
    model = add_lora(random_model(cfg, seed), LoraConfig(rank=4, alpha=8, dropout=0.0, targets=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
    return model.eval()


def tokens(cfg=GQA, rows=2, length=24) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (rows, length), generator=torch.Generator().manual_seed(1))


def test_training_changes_only_the_adapters():
    model = add_lora(random_model(MHA), LoraConfig(rank=4))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name in before if ".lora_A." in name or ".lora_B." in name}
    assert len(trainable) == 2 * 7 * MHA.n_layers  # A and B for each of the 7 block projections
    optimizer = build_optimizer(model.train(), OptimConfig(lr=1e-2))
    for _ in range(3):
        loss = lm_loss(model, tokens(MHA, rows=4, length=17))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_a_fresh_adapter_changes_nothing():
    base = random_model(MHA)
    x = tokens(MHA)
    with torch.no_grad():
        expected = base(x)
        assert torch.equal(add_lora(base, LoraConfig()).eval()(x), expected)


@pytest.mark.parametrize("cfg", [MHA, GQA], ids=["llama1-mha", "llama2-gqa"])
def test_merged_model_gives_the_logits_of_base_plus_adapters(cfg):
    model, x = lora_model(cfg), tokens(cfg)
    with torch.no_grad():
        with_adapters = model(x)
        merged = merge_lora(model)
        assert type(merged) is Transformer
        assert set(merged.state_dict()) == set(random_model(cfg).state_dict())
        assert (merged(x) - with_adapters).abs().max().item() < 1e-5
        # The adapters matter, and the LoRA model is left as it was.
        assert (random_model(cfg)(x) - with_adapters).abs().max().item() > 1e-3
        assert torch.equal(model(x), with_adapters)


def test_lora_on_a_tied_model_merges_into_a_tied_model_and_leaves_the_shared_output_alone():
    cfg = GQA.replace(tie_embeddings=True)
    model, x = lora_model(cfg, targets=ALL_LINEAR[:-1]), tokens(cfg)
    with torch.no_grad():
        merged = merge_lora(model)
        assert merged.output.weight is merged.tok_embeddings.weight
        assert (merged(x) - model(x)).abs().max().item() < 1e-5
    # An adapter on the output would, merged, make it differ from the table it is.
    with pytest.raises(UserError, match="LoRA target 'output' is the embedding table of this tied model"):
        add_lora(random_model(cfg), LoraConfig(targets=("wq", "output")))


def test_merged_model_exported_to_hf_loads_in_transformers_with_equal_logits(tmp_path):
    model, x = lora_model(), tokens()
    export(tmp_path / "hf", merge_lora(model), format="hf")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() < 1e-4


def test_saved_adapters_reload_onto_the_base_with_equal_logits(tmp_path):
    model, x = lora_model(), tokens()
    save_adapters(tmp_path / "adapters", model)
    names = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert names == [".llamafoundry-output.json", "adapter_config.json", "adapter_model.safetensors"]
    reloaded = load_adapters(tmp_path / "adapters", random_model(GQA)).eval()
    assert reloaded.lora == model.lora
    for name, tensor in adapter_state_dict(model).items():
        assert torch.equal(adapter_state_dict(reloaded)[name], tensor), name
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))


def test_hf_peft_applies_our_adapters_to_the_hf_export_of_the_base(tmp_path):
    from peft import PeftModel

    model, x = lora_model(), tokens()
    export(tmp_path / "base", random_model(GQA), format="hf")
    save_adapters(tmp_path / "adapters", model, base_model=str(tmp_path / "base"))
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and (config["r"], config["lora_alpha"]) == (4, 8.0)
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj", "lm_head"]
    )
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapters").eval()
    with torch.no_grad():
        assert (peft_model(x).logits - model(x)).abs().max().item() < 1e-4


def test_adapters_trained_with_hf_peft_load_onto_our_model_with_equal_logits(tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    x = tokens()
    export(tmp_path / "base", random_model(GQA), format="hf")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    settings = PeftLoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "k_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(hf, settings).eval()
    peft_model.save_pretrained(tmp_path / "adapters")
    model, _, _ = load_model(tmp_path / "base")
    load_adapters(tmp_path / "adapters", model)
    assert model.lora.targets == ("wq", "wk") and model.lora.scaling == 4.0
    with torch.no_grad():
        assert (model(x) - peft_model(x).logits).abs().max().item() < 1e-4


def test_a_target_the_model_lacks_is_one_line_naming_its_linear_layers():
    model = random_model(MHA)
    with pytest.raises(UserError) as caught:
        add_lora(model, LoraConfig(targets=("wq", "q_proj")))
    message = str(caught.value)
    assert "\n" not in message and "'q_proj'" in message and "'wq'" not in message
    assert "wq, wk, wv, wo, w1, w2, w3, output" in message
    assert linear_names(model) == list(ALL_LINEAR)
    assert all(p.requires_grad for p in model.parameters())  # untouched: no adapter, nothing frozen


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"rank": 0}, "rank must be a positive integer"),
        ({"alpha": "16"}, "alpha must be a finite number"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"targets": []}, "targets must be a non-empty list"),
        ({"targets": ["wq", "wq"]}, "targets name a layer twice"),
    ],
)
def test_bad_lora_settings_are_one_line(settings, fragment):
    with pytest.raises(UserError) as caught:
        LoraConfig(**settings)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_saving_adapters_never_replaces_what_we_did_not_write(tmp_path):
    model = lora_model()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt, which llamafoundry did not write"):
        save_adapters(theirs, model, overwrite=True)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    ours = save_adapters(tmp_path / "ours", model)
    written = (ours / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        save_adapters(ours, lora_model(seed=1))
    assert (ours / "adapter_model.safetensors").read_bytes() == written
    save_adapters(ours, lora_model(seed=1), overwrite=True)
    assert (ours / "adapter_model.safetensors").read_bytes() != written


def test_adapters_of_another_model_shape_are_one_line_and_leave_the_model_alone(tmp_path):
    save_adapters(tmp_path / "adapters", lora_model(GQA))
    other = random_model(MHA)  # 4 key/value heads where the adapters were trained for 2
    with pytest.raises(UserError) as caught:
        load_adapters(tmp_path / "adapters", other)
    assert "does not fit the model" in str(caught.value) or "but the model needs" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert getattr(other, "lora", None) is None and linear_names(other) == list(ALL_LINEAR)
    with pytest.raises(UserError, match="is not a LoRA adapter folder"):
        load_adapters(tmp_path, random_model(GQA))


def test_a_loaded_model_folder_takes_adapters_and_merges(tmp_path):
    # The finetune command's path: load_model -> add_lora -> train -> merge_lora -> save a plain folder.
    export(tmp_path / "base", random_model(MHA), format="native")
    model, _, _ = load_model(tmp_path / "base")
    merged = merge_lora(add_lora(model, LoraConfig()))
    export(tmp_path / "merged", merged, format="native")
    back, _, _ = load_model(tmp_path / "merged")
    for name, tensor in random_model(MHA).state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name  # B = 0: merging a fresh adapter is exact


@pytest.mark.distributed
def test_adapters_added_before_fsdp_train_save_and_merge_as_on_one_process(tmp_path):
    out = tmp_path / "diff.json"
    worker = Path(__file__).parent / "workers" / "fsdp_lora_check.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run(
        [*cmd, str(worker), str(out), str(tmp_path / "adapters")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = json.loads(out.read_text())
    assert diffs.pop("frozen_moved") == []
    assert all(diff < 1e-5 for diff in diffs.values()), diffs
