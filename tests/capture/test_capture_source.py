"""parse_source: every accepted form, and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from subtitled.capture import SourceSpec, parse_source
from subtitled.errors import ConfigError

GOOD = [
    ("monitor", SourceSpec(kind="monitor")),
    ("  monitor  ", SourceSpec(kind="monitor")),
    ("monitor:cap", SourceSpec(kind="monitor", sink="cap")),
    ("monitor:cap.monitor", SourceSpec(kind="monitor", sink="cap")),
    (
        "monitor:alsa_output.pci-0000_00_1f.3.analog-stereo",
        SourceSpec(kind="monitor", sink="alsa_output.pci-0000_00_1f.3.analog-stereo"),
    ),
    ("file:/tmp/talk.mp4", SourceSpec(kind="file", path=Path("/tmp/talk.mp4"))),
    ("file:rel/a b.flac", SourceSpec(kind="file", path=Path("rel/a b.flac"))),
    ("file:C:/x.wav", SourceSpec(kind="file", path=Path("C:/x.wav"))),
    ("stdin", SourceSpec(kind="stdin")),
    ("stdin:16000", SourceSpec(kind="stdin", sample_rate_hz=16000)),
    ("stdin:44100", SourceSpec(kind="stdin", sample_rate_hz=44100)),
    ("stdin:8000Hz", SourceSpec(kind="stdin", sample_rate_hz=8000)),
    ("0", SourceSpec(kind="device", device=0)),
    ("12", SourceSpec(kind="device", device=12)),
    ("pulse", SourceSpec(kind="device", device="pulse")),
    ("USB Audio", SourceSpec(kind="device", device="USB Audio")),
    (
        "HDA Intel PCH: ALC892 Analog (hw:0,0)",
        SourceSpec(kind="device", device="HDA Intel PCH: ALC892 Analog (hw:0,0)"),
    ),
    ("device:monitor", SourceSpec(kind="device", device="monitor")),
    ("device:42", SourceSpec(kind="device", device="42")),
    ("device:file:x", SourceSpec(kind="device", device="file:x")),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("file:", "path"),
    ("file:   ", "path"),
    ("file", "needs a value"),
    ("monitor:", "sink name"),
    ("monitor:.monitor", "sink name"),
    ("stdin:", "sample rate"),
    ("stdin:abc", "sample rate"),
    ("stdin:-16000", "sample rate"),
    ("stdin:16.5k", "sample rate"),
    ("stdin:10", "between"),
    ("stdin:10000000", "between"),
    ("device:", "device name"),
    ("device", "needs a value"),
    ("-1", "negative"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parse_source_accepts(text: str, expected: SourceSpec) -> None:
    assert parse_source(text) == expected


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_str_round_trips(text: str, expected: SourceSpec) -> None:
    assert parse_source(str(expected)) == expected


@pytest.mark.parametrize(("text", "why"), BAD)
def test_parse_source_rejects(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_source(text)
    message = str(info.value)
    assert repr(text) in message  # names the value
    assert why in message  # and what is wrong with it
    assert "'monitor'" in message and "'file:PATH'" in message and "'stdin'" in message


def test_file_path_expands_home() -> None:
    spec = parse_source("file:~/talk.wav")
    assert spec.path == Path.home() / "talk.wav"


def test_spec_is_frozen() -> None:
    spec = parse_source("stdin")
    with pytest.raises(AttributeError):
        spec.kind = "file"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [({"kind": "device"}, "device name"), ({"kind": "file"}, "path")],
)
def test_spec_validates_fields(kwargs: dict[str, str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        SourceSpec(**kwargs)  # type: ignore[arg-type]
