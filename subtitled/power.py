"""Power awareness: on battery the daemon does less work per second of audio.

The power source is read from sysfs (`/sys/class/power_supply`, the kernel's view that
UPower itself reads): AC when a `Mains` or `USB` supply is online, battery when none is
and a `Battery` supply is discharging, unknown otherwise (a desktop without supplies, a
container). `power.profile = "auto"` follows it; `performance` and `battery` pin one.

The `battery` profile changes what can change under a running pipeline, without a restart
and without losing text:
- the ASR steps less often (`power.battery_step_s`, default 1.0 s against
  `streaming.step_s` 0.5 s): each step re-decodes the open buffer, so half the steps is
  about half the ASR compute, for about one more step of latency;
- translation runs on final segments only (partials pass through with the translation as
  it stood), so the model runs once per sentence instead of once per revision.
Thread counts are fixed when a model loads, so they are not part of the profile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from subtitled.errors import ConfigError

log = logging.getLogger(__name__)

PowerSource = Literal["ac", "battery", "unknown"]
Profile = Literal["performance", "battery"]
PROFILE_SETTINGS = ("auto", "performance", "battery")
SYSFS_POWER_SUPPLY = Path("/sys/class/power_supply")


@dataclass(frozen=True)
class PowerConfig:
    """`[power]`: which profile to run, and where the power state is read."""

    profile: str = "auto"
    """'auto' (battery profile while on battery), 'performance' or 'battery'."""
    supply_path: Path = SYSFS_POWER_SUPPLY
    """The power_supply class directory (a test or a container may point elsewhere)."""
    poll_s: float = 5.0
    """How often `auto` reads the power state."""
    battery_step_s: float = 1.0
    """The ASR step on battery (`streaming.step_s` otherwise)."""
    battery_translation_threads: int = 1
    """The translation model's threads on battery (`translation.threads` otherwise, if
    fewer): a profile change reloads the model in the background, the old one serving
    until the new one is live."""

    def battery_threads(self, configured: int) -> int:
        """The translation model's threads on battery, given `translation.threads` (0:
        ONNX Runtime's default, all cores)."""
        fewer = self.battery_translation_threads
        return min(configured, fewer) if configured > 0 else fewer

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_SETTINGS:
            raise ConfigError(
                f"power.profile: {self.profile!r} is invalid; expected one of "
                f"{', '.join(PROFILE_SETTINGS)}"
            )
        if not 0.1 <= self.poll_s <= 600:
            raise ConfigError(f"power.poll_s: {self.poll_s} is invalid; expected 0.1 to 600")
        if self.battery_translation_threads < 1:
            raise ConfigError(
                f"power.battery_translation_threads: {self.battery_translation_threads} is "
                "invalid; expected an integer >= 1"
            )
        if not 0.05 <= self.battery_step_s <= 2.0:
            raise ConfigError(
                f"power.battery_step_s: {self.battery_step_s} is invalid; expected 0.05 to 2"
            )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def read_power_source(root: Path = SYSFS_POWER_SUPPLY) -> PowerSource:
    """AC, battery or unknown, from a power_supply class directory."""
    try:
        supplies = sorted(root.iterdir())
    except OSError:
        return "unknown"
    mains_seen = discharging = False
    for supply in supplies:
        kind = _read(supply / "type")
        if kind in ("Mains", "USB", "USB_C", "USB_PD"):
            mains_seen = True
            if _read(supply / "online") == "1":
                return "ac"
        elif kind == "Battery" and _read(supply / "scope") != "Device":
            # A wireless mouse's battery (scope Device) says nothing about the laptop.
            discharging = discharging or _read(supply / "status") == "Discharging"
    if discharging:
        return "battery"
    return "ac" if mains_seen else "unknown"


def choose_profile(setting: str, source: PowerSource) -> Profile:
    """The profile to run: the pinned one, or with `auto` the power source's."""
    if setting == "performance":
        return "performance"
    if setting == "battery":
        return "battery"
    return "battery" if source == "battery" else "performance"
