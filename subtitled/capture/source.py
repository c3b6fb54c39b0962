"""What to capture from: the `--source` value, parsed once into a `SourceSpec`.

Accepted forms (also listed in every `ConfigError` this module raises):

- `NAME`            an input device whose name contains NAME (case-insensitive)
- `INDEX`           an input device by its PortAudio index (`subtitled devices`)
- `device:NAME`     the same as NAME, for names that look like another form
- `monitor`         what the default output sink plays (PulseAudio / PipeWire)
- `monitor:SINK`    what the output sink SINK plays
- `file:PATH`       any audio or video file PyAV (FFmpeg) can decode
- `stdin`           raw PCM on standard input, s16le mono at 16000 Hz
- `stdin:RATE`      raw PCM on standard input, s16le mono at RATE Hz

Device names contain colons (ALSA: `HDA Intel PCH: ALC892 Analog (hw:0,0)`), so
only the prefixes above are special; anything else is a device name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from subtitled import SAMPLE_RATE_HZ
from subtitled.errors import ConfigError

SourceKind = Literal["device", "monitor", "file", "stdin"]

ALLOWED_FORMS = (
    "a device name (substring) or index, 'device:NAME', 'monitor', 'monitor:SINK', "
    "'file:PATH', 'stdin' or 'stdin:RATE'"
)

MIN_STDIN_RATE_HZ = 1_000
MAX_STDIN_RATE_HZ = 384_000
_MONITOR_SUFFIX = ".monitor"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed audio source. Which fields are set depends on `kind`.

    - device:  `device` is a name substring (str) or a PortAudio index (int)
    - monitor: `sink` is the output sink's name, or None for the default sink
    - file:    `path`
    - stdin:   `sample_rate_hz` of the raw s16le mono PCM
    """

    kind: SourceKind
    device: str | int | None = None
    sink: str | None = None
    path: Path | None = None
    sample_rate_hz: int = SAMPLE_RATE_HZ

    def __post_init__(self) -> None:
        if self.kind == "device" and self.device is None:
            raise ConfigError("a device source needs a device name or index")
        if self.kind == "file" and self.path is None:
            raise ConfigError("a file source needs a path")

    def __str__(self) -> str:
        """The canonical text form; `parse_source(str(spec)) == spec`."""
        if self.kind == "device":
            if isinstance(self.device, str) and _looks_special(self.device):
                return f"device:{self.device}"
            return str(self.device)
        if self.kind == "monitor":
            return "monitor" if self.sink is None else f"monitor:{self.sink}"
        if self.kind == "file":
            return f"file:{self.path}"
        if self.sample_rate_hz == SAMPLE_RATE_HZ:
            return "stdin"
        return f"stdin:{self.sample_rate_hz}"


def parse_source(text: str) -> SourceSpec:
    """Parse a `--source` value; a bad one raises `ConfigError` naming it and the allowed forms."""
    value = text.strip()
    if not value:
        raise _bad(text, "it is empty")
    head, sep, rest = value.partition(":")
    if sep:
        if head == "file":
            return _parse_file(text, rest)
        if head == "monitor":
            return _parse_monitor(text, rest)
        if head == "stdin":
            return _parse_stdin(text, rest)
        if head == "device":
            name = rest.strip()
            if not name:
                raise _bad(text, "the device name after 'device:' is empty")
            return SourceSpec(kind="device", device=name)
    if value == "monitor":
        return SourceSpec(kind="monitor")
    if value == "stdin":
        return SourceSpec(kind="stdin")
    if value in ("file", "device"):
        raise _bad(text, f"'{value}' needs a value after a colon")
    if value.lstrip("+-").isdigit():
        index = int(value)
        if index < 0:
            raise _bad(text, "a device index cannot be negative")
        return SourceSpec(kind="device", device=index)
    return SourceSpec(kind="device", device=value)


def _parse_file(text: str, rest: str) -> SourceSpec:
    if not rest.strip():
        raise _bad(text, "the path after 'file:' is empty")
    return SourceSpec(kind="file", path=Path(rest).expanduser())


def _parse_monitor(text: str, rest: str) -> SourceSpec:
    sink = rest.strip()
    # Accept the monitor source's own name too (`pactl list short sources` shows it).
    sink = sink.removesuffix(_MONITOR_SUFFIX)
    if not sink:
        raise _bad(text, "the sink name after 'monitor:' is empty")
    return SourceSpec(kind="monitor", sink=sink)


def _parse_stdin(text: str, rest: str) -> SourceSpec:
    rate_text = rest.strip().lower().removesuffix("hz")
    if not rate_text.isdigit():
        raise _bad(text, "the sample rate after 'stdin:' must be a whole number of Hz")
    rate_hz = int(rate_text)
    if not MIN_STDIN_RATE_HZ <= rate_hz <= MAX_STDIN_RATE_HZ:
        raise _bad(
            text,
            f"the sample rate must be between {MIN_STDIN_RATE_HZ} and {MAX_STDIN_RATE_HZ} Hz",
        )
    return SourceSpec(kind="stdin", sample_rate_hz=rate_hz)


def _looks_special(name: str) -> bool:
    """True when a device name would parse as another form without the `device:` prefix."""
    head, sep, _ = name.partition(":")
    special_prefix = bool(sep) and head in ("file", "monitor", "stdin", "device")
    return (
        special_prefix
        or name.strip() in ("monitor", "stdin", "file", "device")
        or name.strip().lstrip("+-").isdigit()
    )


def _bad(text: str, reason: str) -> ConfigError:
    return ConfigError(f"invalid audio source {text!r}: {reason}; expected {ALLOWED_FORMS}")
