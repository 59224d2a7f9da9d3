"""`llamafoundry presets | info | convert`, and the one-line errors users get for bad input."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from llamafoundry.checkpoint import load_model, save_model
from llamafoundry.checkpoint.common import DTYPES
from llamafoundry.cli.models import DTYPE_NAMES
from llamafoundry.config import PRESETS, num_params
from tests.helpers import GQA, assert_user_error, random_model


def test_presets_lists_the_paper_sizes(cli):
    result = cli("presets")
    assert result.returncode == 0
    sizes = dict(line.split()[:2] for line in result.stdout.splitlines()[1:])
    assert [sizes[f"llama-{n}"] for n in ("7b", "13b", "33b", "65b")] == ["6.7B", "13.0B", "32.5B", "65.2B"]
    assert sizes["llama-1m"].endswith("K") and sizes["llama-110m"] == "110.1M"


class _LargestTensor(TorchDispatchMode):
    """The most elements of any tensor with memory (not on the meta device) that an op makes."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.largest = max(self.largest, t.numel())
        return out


def test_info_describes_every_preset_from_its_config_without_weights(cli):
    for name, cfg in PRESETS.items():
        with _LargestTensor() as seen:
            result = cli("info", name)
        assert result.returncode == 0, result.stderr
        assert "format:     preset" in result.stdout and f"{num_params(cfg):,}" in result.stdout
        # Not one weight matrix or rotary table in memory (llama-1m's embedding alone has 65,536 values).
        assert seen.largest < 4096, (name, seen.largest)


def test_info_on_a_preset_needs_no_torch_and_checks_its_dtype(cli):
    # Importing torch alone takes over a second; describing a preset needs none of it.
    code = (
        "import sys; from llamafoundry.cli import main; sys.argv = ['llamafoundry', 'info', 'llama3.1-405b']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "405,853,388,800" in done.stdout, done.stderr
    assert set(DTYPE_NAMES) == set(DTYPES)
    assert_user_error(cli("info", "llama-7b", "--dtype", "fp8"), "unknown dtype 'fp8'")


def test_convert_between_every_format_keeps_the_logits(tmp_path, shared_data, cli):
    stories = shared_data / "models" / "stories260K" / "stories260K.bin"
    tokens = torch.randint(0, 512, (1, 16))
    reference, _, _ = load_model(stories)
    with torch.no_grad():
        expected = reference(tokens)
    source = str(stories)
    for fmt in ("native", "hf", "meta", "native"):
        dest = tmp_path / f"{fmt}-{len(list(tmp_path.iterdir()))}"
        extra = ["--shards", "2"] if fmt == "meta" else []
        result = cli("convert", source, "-o", str(dest), "--to", fmt, "--max-seq-len", "512", *extra)
        assert result.returncode == 0, result.stderr
        model, _, _ = load_model(dest, max_seq_len=512)
        with torch.no_grad():
            assert (model(tokens) - expected).abs().max() < 1e-5, fmt
        source = str(dest)
    info = cli("info", source)
    assert (
        info.returncode == 0 and "format:     native" in info.stdout and "260,032" in info.stdout
    )  # stories260K: its shared classifier counted once


def test_missing_folder(tmp_path, cli):
    assert_user_error(cli("info", str(tmp_path / "nope")), "does not exist")


def test_unknown_preset(cli):
    assert_user_error(cli("info", "llama-3b"), "llama-3b does not exist", "llama-7b")


def test_folder_of_unknown_format(tmp_path, cli):
    (tmp_path / "weights.npz").write_bytes(b"\0" * 100)
    assert_user_error(cli("info", str(tmp_path)), "is not a model folder we know")


def test_truncated_safetensors(tmp_path, cli):
    save_model(tmp_path / "m", random_model(GQA))
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_user_error(cli("info", str(tmp_path / "m")), "model.safetensors", "truncated")


def test_tensor_of_the_wrong_shape(tmp_path, cli):
    save_model(tmp_path / "m", random_model(GQA))
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    state["layers.1.attention.wk.weight"] = torch.zeros(64, 64)
    save_file(state, weights)
    assert_user_error(
        cli("info", str(tmp_path / "m")), "layers.1.attention.wk.weight", "(64, 64)", "(16, 64)"
    )


def test_malformed_config(tmp_path, cli):
    save_model(tmp_path / "m", random_model(GQA))
    config = tmp_path / "m" / "config.json"
    values = json.loads(config.read_text())
    values["model"]["n_heads"] = 7
    config.write_text(json.dumps(values))
    assert_user_error(cli("info", str(tmp_path / "m")), "invalid model config", "n_heads 7")
    config.write_text("{not json")
    assert_user_error(cli("info", str(tmp_path / "m")), "config.json is not readable JSON")


def test_truncated_meta_shard_and_llama2c_file(tmp_path, shared_data, cli):
    stories = (shared_data / "models" / "stories260K" / "stories260K.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(stories[:-1000])
    assert_user_error(cli("info", str(tmp_path / "cut.bin")), "truncated")
    assert_user_error(
        cli("convert", str(tmp_path / "nothing"), "-o", str(tmp_path / "out")), "does not exist"
    )
    assert not (tmp_path / "out").exists()
    save_model(tmp_path / "m", random_model(GQA))
    assert cli("convert", str(tmp_path / "m"), "-o", str(tmp_path / "meta"), "--to", "meta").returncode == 0
    shard = tmp_path / "meta" / "consolidated.00.pth"
    shard.write_bytes(shard.read_bytes()[:500])
    assert_user_error(cli("info", str(tmp_path / "meta")), "consolidated.00.pth", "truncated")


def test_convert_refuses_to_overwrite_its_source(tmp_path, cli):
    save_model(tmp_path / "m", random_model(GQA))
    assert_user_error(cli("convert", str(tmp_path / "m"), "-o", str(tmp_path / "m")), "is the source folder")
    assert load_model(tmp_path / "m")[2] == GQA
