"""Energy and carbon of training, with the paper's formula (Sec. 6, Table 15).

    Wh = GPU-hours x GPU power x PUE;   tCO2eq = MWh x 0.385

PUE 1.1 and the US average carbon intensity of 0.385 kg CO2eq/kWh are the paper's; an A100-80GB draws
400 W in its accounting. Each GPU's power is in hardware.py's table. On NVIDIA GPUs, `EnergyMeter` reads
the energy the boards actually drew from NVML instead of assuming their rated power.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PUE = 1.1
CARBON_INTENSITY_T_PER_MWH = 0.385
# A busy CPU core of a current server draws roughly this much of its socket's power; an estimate only.
CPU_CORE_POWER_W = 10.0


@dataclass(frozen=True)
class Footprint:
    device_hours: float
    power_w: float
    energy_mwh: float
    tco2eq: float


def footprint(
    device_hours: float,
    power_w: float,
    pue: float = PUE,
    carbon_intensity: float = CARBON_INTENSITY_T_PER_MWH,
) -> Footprint:
    """Energy (MWh) and tCO2eq of `device_hours` at `power_w` per device."""
    mwh = device_hours * power_w * pue / 1e6
    return Footprint(device_hours, power_w, mwh, mwh * carbon_intensity)


# Table 15 as printed: model -> (GPU-hours, MWh, tCO2eq), 2,048 A100-80GB at 400 W.
PAPER_TABLE_15 = {
    "LLaMA-7B": (82_432, 36, 14),
    "LLaMA-13B": (135_168, 59, 23),
    "LLaMA-33B": (530_432, 233, 90),
    "LLaMA-65B": (1_022_362, 449, 173),
}
PAPER_GPU = ("A100-80GB", 400.0)


def table_15() -> list[tuple[str, int, Footprint, tuple[int, int]]]:
    """(model, GPU-hours, our formula's footprint, the paper's printed MWh and tCO2eq) per row of Table 15."""
    return [
        (model, hours, footprint(hours, PAPER_GPU[1]), (mwh, tco2))
        for model, (hours, mwh, tco2) in PAPER_TABLE_15.items()
    ]


class EnergyMeter:
    """Energy a CUDA device drew since `start`, from NVML's board counter (Volta and newer), in Wh.

    `available` is False without an NVIDIA GPU or the `nvidia-ml-py` package; callers then estimate from
    power x time. `read_mj` (millijoules since the driver loaded) can be given instead of NVML.
    """

    def __init__(self, device_index: int | None = None, read_mj: Callable[[], int] | None = None) -> None:
        self._read = read_mj or _nvml_counter(device_index)
        self._start = self._read() if self._read else None

    @property
    def available(self) -> bool:
        return self._start is not None

    def wh(self) -> float | None:
        """Wh since construction (board energy, before PUE), or None when not measurable."""
        if self._start is None:
            return None
        return (self._read() - self._start) / 3.6e6


def _nvml_counter(device_index: int | None) -> Callable[[], int] | None:
    if device_index is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # pre-Volta boards have no counter
    except Exception:  # no package, no driver, no counter: all mean "estimate instead"
        return None
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)


def energy_wh(seconds: float, power_w: float, devices: int = 1, pue: float = PUE) -> float:
    """Energy in Wh of `devices` busy for `seconds`, PUE included."""
    return seconds / 3600.0 * power_w * devices * pue
