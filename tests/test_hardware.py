"""One GPU table: CUDA's device names find their entry, and MFU, energy and planning all read it."""

import pytest
import torch

from llamafoundry.hardware import GPUS, gpu_named
from llamafoundry.train import metrics, plan


@pytest.mark.parametrize(
    ("device_name", "kind"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("Tesla V100-SXM2-32GB", "v100"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA L4", "l4"),
    ],
)
def test_cuda_device_names_find_their_entry(device_name, kind):
    assert gpu_named(device_name) is GPUS[kind]


def test_an_unknown_gpu_is_not_taken_for_a_known_one():
    assert gpu_named("NVIDIA L40S") is None  # not an L4
    assert gpu_named("NVIDIA GeForce RTX 4090") is None


def test_mfu_energy_and_the_planner_read_the_one_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    gpu = torch.device("cuda")
    assert metrics.peak_flops(gpu, torch.bfloat16) == GPUS["h200"].peak_bf16_flops == 989e12
    assert metrics.peak_flops(gpu, torch.float32) == GPUS["h200"].peak_fp32_flops == 67e12
    assert metrics.device_power_w(gpu) == GPUS["h200"].power_w == 700
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA B300")
    assert metrics.device_power_w(gpu) == GPUS["a100-80gb"].power_w == 400  # the paper's GPU
    assert plan.GPUS is GPUS
