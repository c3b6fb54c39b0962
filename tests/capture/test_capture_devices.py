"""Device selection and listing without a sound server: name resolution, pactl parsing, and
what happens when PortAudio itself is missing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from subtitled.capture.portaudio import DeviceInfo, resolve_input
from subtitled.capture.pulse import parse_default_sink, parse_short_sources
from subtitled.errors import DeviceNotFound

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", "ALSA", 2, 44100.0),
    DeviceInfo(3, "USB Audio Device: - (hw:2,0)", "ALSA", 1, 48000.0),
    DeviceInfo(4, "USB Audio Device: Mic 2 (hw:3,0)", "ALSA", 1, 48000.0),
    DeviceInfo(7, "pulse", "ALSA", 32, 44100.0),
    DeviceInfo(8, "default", "ALSA", 32, 44100.0, is_default=True),
]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (None, 8),  # the default input
        (0, 0),
        (7, 7),
        ("pulse", 7),
        ("PULSE", 7),
        ("default", 8),
        ("alc892", 0),
        ("hw:2,0", 3),
        ("USB Audio", 3),  # several match: the lowest index wins
        ("mic 2", 4),
    ],
)
def test_resolve_input(query: str | int | None, index: int) -> None:
    assert resolve_input(query, DEVICES).index == index


@pytest.mark.parametrize(
    ("query", "expected"),
    [("bluetooth", "matching 'bluetooth'"), (5, "index 5"), (-1, "index -1")],
)
def test_resolve_input_not_found_lists_devices(query: str | int, expected: str) -> None:
    with pytest.raises(DeviceNotFound) as info:
        resolve_input(query, DEVICES)
    message = str(info.value)
    assert expected in message
    assert "[3] USB Audio Device: - (hw:2,0) (ALSA, 1 ch)" in message
    assert "[7] pulse" in message


def test_resolve_input_without_devices() -> None:
    with pytest.raises(DeviceNotFound, match="no input devices at all"):
        resolve_input("mic", [])
    with pytest.raises(DeviceNotFound, match="no input devices at all"):
        resolve_input(None, [])


def test_device_info_spec() -> None:
    assert DEVICES[1].spec == "3"
    monitor = DeviceInfo(None, "alsa_output.pci.analog-stereo.monitor", "PulseAudio", 2, 48e3, True)
    assert monitor.spec == "monitor:alsa_output.pci.analog-stereo"


PACTL_PULSEAUDIO = (
    "0\talsa_output.pci-0000_00_1f.3.analog-stereo.monitor\tmodule-alsa-card.c\t"
    "s16le 2ch 44100Hz\tSUSPENDED\n"
    "1\talsa_input.pci-0000_00_1f.3.analog-stereo\tmodule-alsa-card.c\t"
    "s16le 2ch 44100Hz\tRUNNING\n"
    "7\tcap.monitor\tmodule-null-sink.c\ts16le 2ch 44100Hz\tIDLE\n"
)
PACTL_PIPEWIRE = (
    "52\talsa_output.usb-Focusrite.monitor\tPipeWire\ts32le 2ch 48000Hz\tSUSPENDED\n"
    "53\talsa_input.usb-Focusrite\tPipeWire\ts32le 1ch 48000Hz\tSUSPENDED\n"
    "garbage line\n"
    "\n"
)


def test_parse_short_sources_pulseaudio() -> None:
    sources = parse_short_sources(PACTL_PULSEAUDIO)
    assert [(s.index, s.is_monitor, s.sink_name) for s in sources] == [
        (0, True, "alsa_output.pci-0000_00_1f.3.analog-stereo"),
        (1, False, None),
        (7, True, "cap"),
    ]
    cap = sources[2]
    assert (cap.sample_format, cap.channels, cap.sample_rate_hz, cap.state) == (
        "s16le",
        2,
        44100,
        "IDLE",
    )


def test_parse_short_sources_pipewire() -> None:
    sources = parse_short_sources(PACTL_PIPEWIRE)
    assert [(s.name, s.channels, s.sample_rate_hz) for s in sources] == [
        ("alsa_output.usb-Focusrite.monitor", 2, 48000),
        ("alsa_input.usb-Focusrite", 1, 48000),
    ]


@pytest.mark.parametrize(
    ("info", "sink"),
    [
        ("Server Name: pulseaudio\nDefault Sink: cap\nDefault Source: cap.monitor\n", "cap"),
        ("Default Sink: alsa_output.pci.analog-stereo\n", "alsa_output.pci.analog-stereo"),
        ("Default Sink: (null)\n", None),
        ("Server Name: PulseAudio (on PipeWire 1.0.5)\n", None),
    ],
)
def test_parse_default_sink(info: str, sink: str | None) -> None:
    assert parse_default_sink(info) == sink


def run_without_portaudio(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where libportaudio cannot be found."""
    prelude = textwrap.dedent(
        """
        import ctypes.util
        _find = ctypes.util.find_library
        ctypes.util.find_library = lambda name: None if "portaudio" in name else _find(name)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_does_not_need_portaudio_or_av() -> None:
    done = run_without_portaudio(
        """
        import sys
        import subtitled.capture
        heavy = [m for m in ("sounddevice", "av", "soxr") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_opening_a_device_without_portaudio_says_what_to_install() -> None:
    done = run_without_portaudio(
        """
        import asyncio
        from subtitled.capture import list_devices, open_source, parse_source
        from subtitled.errors import CaptureError

        async def main():
            async for _ in open_source(parse_source("monitor")):
                pass

        for call in (lambda: asyncio.run(main()), list_devices):
            try:
                call()
            except CaptureError as exc:
                print(type(exc).__name__, exc)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("CaptureError")
        assert "libportaudio2" in line


@pytest.mark.parametrize("portaudio", [True, False])
def test_devices_without_any_says_what_works_instead(
    portaudio: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`subtitled devices` on a machine with no input device (or no PortAudio) lists the
    sources that need none: a file, stdin, and the monitor once a sound server runs."""
    from subtitled.capture import portaudio as portaudio_module
    from subtitled.capture import pulse
    from subtitled.cli import main
    from subtitled.errors import CaptureError

    if portaudio:
        monkeypatch.setattr(portaudio_module, "load_sounddevice", lambda: None)
        monkeypatch.setattr(portaudio_module, "input_devices", lambda sd: [])
        monkeypatch.setattr(pulse, "pactl_available", lambda: False)
    else:
        def missing() -> None:
            raise CaptureError(portaudio_module.PORTAUDIO_MISSING)

        monkeypatch.setattr(portaudio_module, "load_sounddevice", missing)
    code = main(["devices"])
    out, err = capsys.readouterr()
    assert code == (0 if portaudio else CaptureError.exit_code)
    assert ("no capture devices found" in out) if portaudio else ("libportaudio2" in err)
    for source in ("--source file:PATH", "--source stdin", "--source monitor", "PipeWire",
                   "subtitled transcribe FILE"):
        assert source in out, out
