"""PulseAudio / PipeWire monitor sources, found through `pactl`.

Every output sink has a monitor source (`<sink>.monitor`) that carries what the sink plays.
subtitled records it through the ALSA `pulse` PCM (PortAudio's `pulse` device) with
`PULSE_SOURCE` naming the monitor, so no libpulse binding is needed. PipeWire's
`pipewire-pulse` answers `pactl` the same way.

Parsing is pure and tested on captured `pactl` output; `run_pactl` is the only I/O.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

from subtitled.errors import CaptureError, DeviceNotFound

log = logging.getLogger(__name__)

MONITOR_SUFFIX = ".monitor"
PACTL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PulseSource:
    """One line of `pactl list short sources`."""

    index: int
    name: str
    driver: str
    sample_format: str
    channels: int
    sample_rate_hz: int
    state: str

    @property
    def is_monitor(self) -> bool:
        return self.name.endswith(MONITOR_SUFFIX)

    @property
    def sink_name(self) -> str | None:
        """The sink this source monitors, or None for a capture source."""
        return self.name.removesuffix(MONITOR_SUFFIX) if self.is_monitor else None


def parse_short_sources(text: str) -> list[PulseSource]:
    """Parse `pactl list short sources`, tab-separated: `INDEX NAME DRIVER SPEC STATE`,
    where SPEC is `FORMAT Nch RATEHz` (e.g. `s16le 2ch 44100Hz`).

    Lines of another shape (PipeWire versions differ) are skipped with a debug log rather
    than failing the whole listing.
    """
    sources: list[PulseSource] = []
    for line in text.splitlines():
        fields = line.split("\t")
        spec = fields[3].split() if len(fields) >= 4 else []
        try:
            if len(spec) != 3:
                raise ValueError("no sample spec")
            sources.append(
                PulseSource(
                    index=int(fields[0]),
                    name=fields[1],
                    driver=fields[2],
                    sample_format=spec[0],
                    channels=int(spec[1].removesuffix("ch")),
                    sample_rate_hz=int(spec[2].removesuffix("Hz")),
                    state=fields[4].strip() if len(fields) > 4 else "",
                )
            )
        except ValueError:
            if line.strip():
                log.debug("skipping pactl source line %r", line)
    return sources


def parse_default_sink(info_text: str) -> str | None:
    """The `Default Sink:` of `pactl info`, or None when there is none."""
    for line in info_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Default Sink":
            return _sink_or_none(value)
    return None


def _sink_or_none(value: str) -> str | None:
    name = value.strip()
    return None if name in ("", "(null)", "@DEFAULT_SINK@") else name


def pactl_available() -> bool:
    return shutil.which("pactl") is not None


def run_pactl(*args: str) -> str:
    """Run `pactl ARGS`, return stdout; a missing pactl or a failed call is a `CaptureError`."""
    exe = shutil.which("pactl")
    if exe is None:
        raise CaptureError(
            "capturing a monitor needs PulseAudio or PipeWire, but pactl is not installed "
            "(Debian: apt install pulseaudio-utils)"
        )
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"pactl {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        raise CaptureError(f"pactl {' '.join(args)} failed: {reason}")
    return done.stdout


def list_sources() -> list[PulseSource]:
    return parse_short_sources(run_pactl("list", "short", "sources"))


def default_sink() -> str | None:
    """The default output sink's name; `get-default-sink` needs pactl >= 15, else `pactl info`."""
    try:
        return _sink_or_none(run_pactl("get-default-sink"))
    except CaptureError:
        return parse_default_sink(run_pactl("info"))


def find_monitor(sink: str | None) -> PulseSource:
    """The monitor source of `sink` (None: of the default sink), or `DeviceNotFound`."""
    sink_name = sink if sink is not None else default_sink()
    sources = list_sources()
    monitors = [s for s in sources if s.is_monitor]
    if sink_name is None:
        raise DeviceNotFound(
            f"there is no default output sink to monitor; monitor sources: {_names(monitors)}"
        )
    for source in monitors:
        if source.sink_name == sink_name:
            return source
    raise DeviceNotFound(
        f"no monitor source for output sink {sink_name!r}; monitor sources: {_names(monitors)}"
    )


def _names(sources: list[PulseSource]) -> str:
    return ", ".join(s.name for s in sources) if sources else "(none)"
