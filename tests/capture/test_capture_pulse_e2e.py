"""End to end with a real PulseAudio null sink: play real speech into it, capture its monitor
through PortAudio's ALSA `pulse` device, and compare; pull the sink away mid-capture.

A null sink renders in blocks of up to 2 s while nobody listens (module-null-sink's
BLOCK_USEC), so a new recording can see up to 2 s pass before its first audio. The tests
wait for the first captured chunk before playing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import numpy as np
import pytest
from pulse import PulseServer

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import decode_file, list_devices, open_source, parse_source
from subtitled.errors import DeviceNotFound
from subtitled.events import AudioChunk, StatusUpdate

pytestmark = pytest.mark.pulse

FIRST_AUDIO_TIMEOUT_S = 10.0


async def until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


class Capture:
    """Runs `open_source(spec)` in a task, collecting chunks and statuses."""

    def __init__(self, spec: str) -> None:
        self.chunks: list[AudioChunk] = []
        self.statuses: list[StatusUpdate] = []
        self._gen: AsyncGenerator[AudioChunk, None] = open_source(
            parse_source(spec), on_status=self.statuses.append
        )
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for chunk in self._gen:
                self.chunks.append(chunk)
                if self._stop.is_set():
                    break
        finally:
            await self._gen.aclose()

    async def first_audio(self) -> None:
        await until(lambda: self.chunks or self._task.done(), FIRST_AUDIO_TIMEOUT_S, "audio")
        if self._task.done():
            await self._task  # raise what ended it

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 10)

    def states(self) -> list[str]:
        return [s.capture for s in self.statuses]

    def audio(self, since: int = 0) -> np.ndarray:
        return np.concatenate([c.samples for c in self.chunks[since:]])


def best_alignment(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Lag of `reference` inside `captured` and the normalized cross-correlation there."""
    n = len(captured) + len(reference)
    corr = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(corr[: len(captured) - len(reference) + 1]))
    segment = captured[lag : lag + len(reference)]
    ncc = corr[lag] / (np.linalg.norm(reference) * np.linalg.norm(segment) + 1e-12)
    return lag, float(ncc)


def test_monitor_captures_what_the_sink_plays(pulse_sink: PulseServer, shared_data: Path) -> None:
    clip = shared_data / "speech" / "ljspeech" / "LJ001-0001.flac"
    reference = decode_file(clip)

    async def scenario() -> Capture:
        capture = Capture("monitor")  # the monitor of the default sink, `cap`
        await capture.first_audio()
        start = len(capture.chunks)
        await asyncio.to_thread(pulse_sink.play, clip)
        await asyncio.sleep(0.7)  # the tail still in flight
        await capture.stop()
        capture.chunks = capture.chunks[start:]
        return capture

    capture = asyncio.run(scenario())
    assert capture.states() == ["starting", "running", "ended"]
    assert "cap.monitor" in capture.statuses[1].detail
    captured = capture.audio()
    clip_s = len(reference) / SAMPLE_RATE_HZ
    assert clip_s <= len(captured) / SAMPLE_RATE_HZ < clip_s + 3.0
    assert float(np.sqrt(np.mean(captured**2))) > 0.01, "captured audio is silent"
    lag, ncc = best_alignment(captured, reference)
    assert ncc > 0.8, f"captured audio does not match the clip (NCC {ncc:.3f} at {lag})"
    # level is kept (mono clip -> stereo sink -> mono capture)
    segment = captured[lag : lag + len(reference)]
    assert np.linalg.norm(segment) / np.linalg.norm(reference) == pytest.approx(1.0, abs=0.1)
    # chunks are contiguous in audio time
    for before, after in zip(capture.chunks, capture.chunks[1:], strict=False):
        assert after.start_s == pytest.approx(before.end_s, abs=1e-6)


def test_device_lost_and_recovered(pulse_sink: PulseServer, shared_data: Path) -> None:
    clip = shared_data / "speech" / "ljspeech" / "LJ001-0002.flac"
    reference = decode_file(clip)

    async def scenario() -> tuple[Capture, int, float]:
        capture = Capture("monitor:cap")
        try:
            await capture.first_audio()
            await asyncio.to_thread(pulse_sink.unload_sink)  # the device disappears
            await until(lambda: "lost" in capture.states(), 10, "a 'lost' status")
            n_before = len(capture.chunks)
            end_before = capture.chunks[-1].end_s
            await asyncio.sleep(1.5)
            await asyncio.to_thread(pulse_sink.load_sink)  # and comes back
            await until(lambda: capture.states().count("running") >= 2, 30, "'running' again")
            await until(lambda: len(capture.chunks) > n_before, 10, "audio after recovery")
            start = len(capture.chunks)
            await asyncio.to_thread(pulse_sink.play, clip)
            await asyncio.sleep(0.7)
            await capture.stop()
            return capture, start, end_before
        finally:
            if pulse_sink.sink_module() is None:
                pulse_sink.load_sink()

    capture, start, end_before = asyncio.run(scenario())
    states = capture.states()
    assert states[:4] == ["starting", "running", "lost", "running"]
    assert states[-1] == "ended"
    assert "recovered" in capture.statuses[3].detail
    # downstream sees the gap: audio time jumped by at least the 1.5 s the sink was away
    after_gap = next(c for c in capture.chunks if c.start_s >= end_before)
    assert after_gap.start_s - end_before > 1.4
    starts = [c.start_s for c in capture.chunks]
    assert starts == sorted(starts)
    # and audio flows again: the clip played after recovery is captured
    _, ncc = best_alignment(capture.audio(start), reference)
    assert ncc > 0.8, f"no clip in the audio after recovery (NCC {ncc:.3f})"


def test_pulse_device_by_name(pulse_sink: PulseServer) -> None:
    """A plain device name: PortAudio's `pulse` device records the default source."""

    async def scenario() -> Capture:
        capture = Capture("pulse")
        await capture.first_audio()
        await until(lambda: len(capture.chunks) >= 3, 5, "three chunks")
        await capture.stop()
        return capture

    capture = asyncio.run(scenario())
    assert capture.states() == ["starting", "running", "ended"]
    assert all(len(c.samples) == SAMPLE_RATE_HZ // 10 for c in capture.chunks[:-1])


def test_missing_device_name_lists_devices(pulse_sink: PulseServer) -> None:
    async def scenario() -> None:
        async for _ in open_source(parse_source("no such microphone 1234")):
            pass

    with pytest.raises(DeviceNotFound) as info:
        asyncio.run(scenario())
    message = str(info.value)
    assert "'no such microphone 1234'" in message
    assert "pulse" in message  # the available input devices are listed


def test_missing_device_index(pulse_sink: PulseServer) -> None:
    async def scenario() -> None:
        async for _ in open_source(parse_source("999")):
            pass

    with pytest.raises(DeviceNotFound, match="index 999"):
        asyncio.run(scenario())


def test_monitor_of_unknown_sink(pulse_sink: PulseServer) -> None:
    async def scenario() -> None:
        async for _ in open_source(parse_source("monitor:nosuchsink")):
            pass

    with pytest.raises(DeviceNotFound) as info:
        asyncio.run(scenario())
    assert "'nosuchsink'" in str(info.value) and "cap.monitor" in str(info.value)


def test_list_devices_includes_monitors(pulse_sink: PulseServer) -> None:
    devices = list_devices()
    monitors = [d for d in devices if d.is_monitor]
    assert [(d.name, d.spec, d.index) for d in monitors] == [("cap.monitor", "monitor:cap", None)]
    assert monitors[0].channels >= 1 and monitors[0].default_sample_rate_hz > 0
    inputs = [d for d in devices if not d.is_monitor]
    assert "pulse" in [d.name for d in inputs]
    assert all(d.index is not None and d.channels > 0 for d in inputs)
    with contextlib.suppress(StopIteration):
        default = next(d for d in inputs if d.is_default)
        assert default.host_api
