"""PortAudio (through sounddevice): loading it, listing input devices, resolving a name.

`sounddevice` is imported only here, lazily: it loads libportaudio at import time and fails
without it, and `import subtitled.capture` must work on a machine without PortAudio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from subtitled.capture import pulse
from subtitled.errors import CaptureError, DeviceNotFound

log = logging.getLogger(__name__)

PORTAUDIO_MISSING = (
    "audio capture needs the PortAudio library, which is not installed "
    "(Debian/Ubuntu: apt install libportaudio2; Fedora: dnf install portaudio; "
    "macOS: brew install portaudio)"
)
PULSE_DEVICE_NAME = "pulse"
"""The ALSA PCM of the PulseAudio plugin, as PortAudio lists it."""


@dataclass(frozen=True)
class DeviceInfo:
    """One capture device, as `subtitled devices` shows it.

    `spec` is the `--source` text that selects it. Monitor sources (what an output sink
    plays) come from PulseAudio / PipeWire and have no PortAudio `index`.
    """

    index: int | None
    name: str
    host_api: str
    channels: int
    default_sample_rate_hz: float
    is_monitor: bool = False
    is_default: bool = False

    @property
    def spec(self) -> str:
        if self.is_monitor:
            return f"monitor:{self.name.removesuffix(pulse.MONITOR_SUFFIX)}"
        return str(self.index) if self.index is not None else self.name


def load_sounddevice() -> Any:
    """Import sounddevice, or raise `CaptureError` saying how to install PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise CaptureError(f"{PORTAUDIO_MISSING}: {exc}") from exc
    except ImportError as exc:
        raise CaptureError(f"the sounddevice package is not installed: {exc}") from exc
    return sounddevice


def refresh_devices(sd: Any) -> None:
    """Re-initialise PortAudio so it sees devices (and sound servers) that appeared since.

    PortAudio enumerates devices once, in `Pa_Initialize`; sounddevice has no public call
    for re-enumeration, so this uses its `_terminate`/`_initialize` pair (which keeps its
    init count balanced). It closes every open PortAudio stream of the process, so it is
    only called while no capture stream is open.
    """
    try:
        sd._terminate()
        sd._initialize()
    except Exception as exc:  # PortAudioError; sounddevice's own type is not importable early
        raise CaptureError(f"re-initialising PortAudio failed: {exc}") from exc


def input_devices(sd: Any) -> list[DeviceInfo]:
    """PortAudio devices that have input channels, in index order."""
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except Exception as exc:
        raise CaptureError(f"cannot list audio devices: {exc}") from exc
    out: list[DeviceInfo] = []
    for dev in devices:
        if dev["max_input_channels"] <= 0:
            continue
        out.append(
            DeviceInfo(
                index=int(dev["index"]),
                name=str(dev["name"]),
                host_api=str(host_apis[dev["hostapi"]]["name"]),
                channels=int(dev["max_input_channels"]),
                default_sample_rate_hz=float(dev["default_samplerate"]),
                is_default=dev["index"] == default_in,
            )
        )
    return out


def resolve_input(query: str | int | None, devices: list[DeviceInfo]) -> DeviceInfo:
    """Pick the input device for an index, a name, or None (the default input).

    A name matches exactly (case-insensitive) first, then as a substring; when several
    devices contain it, the lowest index wins and the choice is logged.
    """
    if query is None:
        defaults = [d for d in devices if d.is_default] or devices[:1]
        if defaults:
            return defaults[0]
        raise DeviceNotFound(_not_found("default input device", devices))
    if isinstance(query, int):
        for dev in devices:
            if dev.index == query:
                return dev
        raise DeviceNotFound(_not_found(f"input device index {query}", devices))
    needle = query.casefold()
    exact = [d for d in devices if d.name.casefold() == needle]
    if exact:
        return exact[0]
    matches = [d for d in devices if needle in d.name.casefold()]
    if not matches:
        raise DeviceNotFound(_not_found(f"input device matching {query!r}", devices))
    if len(matches) > 1:
        log.info(
            "%r matches %d input devices (%s); using [%s] %s",
            query,
            len(matches),
            ", ".join(f"[{d.index}] {d.name}" for d in matches),
            matches[0].index,
            matches[0].name,
        )
    return matches[0]


def find_input(sd: Any, query: str | int | None) -> DeviceInfo:
    """`resolve_input` over the current devices, re-enumerating once if nothing matches."""
    try:
        return resolve_input(query, input_devices(sd))
    except DeviceNotFound:
        # The device (or the sound server behind it) may have appeared after PortAudio's init.
        refresh_devices(sd)
        return resolve_input(query, input_devices(sd))


def find_pulse_device(sd: Any) -> DeviceInfo:
    """PortAudio's ALSA `pulse` device, through which monitor sources are recorded."""
    try:
        return find_input(sd, PULSE_DEVICE_NAME)
    except DeviceNotFound as exc:
        raise CaptureError(
            "capturing a monitor needs PortAudio's ALSA 'pulse' device, which is missing: "
            "is PulseAudio (or pipewire-pulse) running, and the ALSA PulseAudio plugin "
            f"installed (Debian: apt install libasound2-plugins)? {exc}"
        ) from exc


def list_devices() -> list[DeviceInfo]:
    """Input devices PortAudio knows, then PulseAudio / PipeWire monitor sources (if pactl is)."""
    sd = load_sounddevice()
    devices = input_devices(sd)
    if pulse.pactl_available():
        try:
            monitors = [s for s in pulse.list_sources() if s.is_monitor]
        except CaptureError as exc:  # no sound server running: just no monitors
            log.info("no monitor sources listed: %s", exc)
            monitors = []
        devices += [
            DeviceInfo(
                index=None,
                name=m.name,
                host_api="PulseAudio",
                channels=m.channels,
                default_sample_rate_hz=float(m.sample_rate_hz),
                is_monitor=True,
            )
            for m in monitors
        ]
    return devices


def _not_found(what: str, devices: list[DeviceInfo]) -> str:
    if not devices:
        return f"no {what}: there are no input devices at all (is a sound server running?)"
    listing = "; ".join(f"[{d.index}] {d.name} ({d.host_api}, {d.channels} ch)" for d in devices)
    return f"no {what}; available input devices: {listing}"
