"""capture: the pipeline's first stage. Any source in, 16 kHz mono float32 `AudioChunk`s out.

    spec = parse_source("monitor")             # or "file:talk.mp4", "stdin", "USB", "3"
    chunks = open_source(spec, on_status=print)
    async for chunk in chunks:                 # chunk.samples, chunk.start_s (audio time)
        ...
    await chunks.aclose()                      # releases the device

Sources: `device` and `monitor` (live, through PortAudio; see `device.py`), `file`
(PyAV; `file.py`) and `stdin` (raw PCM; `stdin.py`). `start_s` is audio time; a live
source's time jumps forward over gaps (lost device, dropped audio), so it stays on the
wall clock. sounddevice and PyAV are imported only when a source that needs them opens.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import AsyncGenerator, Callable
from typing import BinaryIO, TextIO

from subtitled.capture import portaudio, pulse
from subtitled.capture.device import DeviceCapture, PortAudioOpener, RetryPolicy
from subtitled.capture.file import decode_file, file_chunks, probe_file
from subtitled.capture.portaudio import DeviceInfo, list_devices
from subtitled.capture.source import SourceSpec, parse_source
from subtitled.capture.stdin import pcm_chunks
from subtitled.errors import CaptureError, ConfigError
from subtitled.events import AudioChunk, StatusUpdate

__all__ = [
    "DeviceCapture",
    "DeviceInfo",
    "RetryPolicy",
    "SourceSpec",
    "check_source",
    "decode_file",
    "list_devices",
    "open_source",
    "parse_source",
]


def open_source(
    spec: SourceSpec,
    *,
    realtime: bool = True,
    block_s: float = 0.1,
    on_status: Callable[[StatusUpdate], None] | None = None,
) -> AsyncGenerator[AudioChunk, None]:
    """Chunks of `block_s` seconds of 16 kHz mono audio from `spec`, until the source ends.

    Nothing is opened until the first `__anext__`; errors opening the source
    (`DeviceNotFound`, `AudioDecodeError`, other `CaptureError`s) are raised there.
    `aclose()` stops the source and releases the device. `realtime` paces files and
    stdin to real time (live devices are real time anyway). `on_status` is called on
    the event loop with `starting`, `running`, `lost` and `ended` updates.
    """
    if not block_s > 0:
        raise ConfigError(f"invalid block_s {block_s!r}: must be a positive number of seconds")
    if spec.kind in ("device", "monitor"):
        capture = DeviceCapture(PortAudioOpener(spec), block_s=block_s, on_status=on_status)
        return capture.chunks()
    if spec.kind == "file":
        if spec.path is None:
            raise ConfigError("a file source needs a path")
        return file_chunks(spec.path, realtime=realtime, block_s=block_s, on_status=on_status)
    stdin = sys.stdin
    if stdin is None:
        raise CaptureError("the source is stdin, but this process has no standard input")
    return pcm_chunks(
        _unbuffered(stdin),
        spec.sample_rate_hz,
        realtime=realtime,
        block_s=block_s,
        on_status=on_status,
    )


def check_source(spec: SourceSpec) -> None:
    """Raise the error that opening `spec` would raise, without capturing anything.

    A missing or undecodable file (`AudioDecodeError`), no such device or monitor
    (`DeviceNotFound`), PortAudio missing or no standard input (`CaptureError`). The
    daemon calls it before it loads models and binds its port, so a bad source fails
    before anything is announced. Blocking (it may enumerate devices or open a file):
    call it from a worker thread in async code.
    """
    if spec.kind == "file":
        if spec.path is None:
            raise ConfigError("a file source needs a path")
        probe_file(spec.path)
    elif spec.kind == "stdin":
        if sys.stdin is None:
            raise CaptureError("the source is stdin, but this process has no standard input")
    else:
        sd = portaudio.load_sounddevice()
        if spec.kind == "monitor":
            pulse.find_monitor(spec.sink)
            portaudio.find_pulse_device(sd)
        else:
            portaudio.find_input(sd, spec.device)


def _unbuffered(stream: TextIO) -> BinaryIO:
    """The raw file under `stream` (reads are single `read` calls), else its buffer. The
    reader thread may be blocked in a read when the process exits; blocked in a
    BufferedReader it holds that reader's lock, and the interpreter aborts at exit when it
    cannot take it ("_enter_buffered_busy", seen once in the service test)."""
    try:
        return os.fdopen(stream.fileno(), "rb", buffering=0, closefd=False)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream.buffer
