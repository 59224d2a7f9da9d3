"""The GPUs we know by their datasheets: peak FLOP/s, memory and board power, in one table.

Training reads the peak for MFU and the power for its energy estimate (train/metrics.py); planning reads
all of it (train/plan.py); footprint.py turns the power into energy and CO2 (Sec. 6).
No torch here: `llamafoundry plan` imports this at every command-line start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    """One GPU kind. Peaks are NVIDIA's dense numbers (fp32 without tensor cores); memory in GB as sold."""

    peak_bf16_flops: float
    peak_fp32_flops: float
    memory_gb: float
    power_w: float  # board power used for accounting (the paper: 400 W for the A100-80GB)


GPUS = {
    "a100-80gb": GPU(312e12, 19.5e12, 80, 400),
    "a100-40gb": GPU(312e12, 19.5e12, 40, 400),
    "h100": GPU(989e12, 67e12, 80, 700),
    "h200": GPU(989e12, 67e12, 141, 700),
    "v100": GPU(125e12, 15.7e12, 32, 300),
    "a10g": GPU(125e12, 31.2e12, 24, 300),  # AWS's A10 variant; 300 W is its g5 power limit
    "l4": GPU(121e12, 30.3e12, 24, 72),
}


def gpu_named(device_name: str) -> GPU | None:
    """The table's entry for a device name as CUDA reports it ("NVIDIA A100-SXM4-80GB"), else None.

    Matched on the model number ("a100", "h200"), which must end there so an L40S is not taken for an
    L4; of the A100 sizes, the one the name gives (both share peak and power).
    """
    name = device_name.lower()
    hits = [key for key in GPUS if re.search(re.escape(key.split("-")[0]) + r"(?![0-9a-z])", name)]
    sized = [key for key in hits if key.split("-")[-1] in name]
    return GPUS[(sized or hits)[0]] if hits else None
