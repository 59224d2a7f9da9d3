"""Energy and carbon of training, with the paper's formula (Sec. 6, Table 15).

    Wh = GPU-hours x GPU power x PUE;   tCO2eq = MWh x 0.385

PUE 1.1 and the US average carbon intensity of 0.385 kg CO2eq/kWh are the paper's; an A100-80GB draws
400 W in its accounting. Each GPU's power is in hardware.py's table.
"""

from __future__ import annotations

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


def energy_wh(seconds: float, power_w: float, devices: int = 1, pue: float = PUE) -> float:
    """Energy in Wh of `devices` busy for `seconds`, PUE included."""
    return seconds / 3600.0 * power_w * devices * pue
