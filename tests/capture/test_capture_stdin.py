"""Raw PCM through a real pipe, as `ffmpeg ... -f s16le - | subtitled run --source stdin`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import decode_file, open_source, parse_source
from subtitled.capture.stdin import S16Decoder, pcm_chunks
from subtitled.errors import CaptureError
from subtitled.events import AudioChunk, StatusUpdate


def tone_pcm(rate_hz: int, seconds: float, freq_hz: float = 440.0) -> bytes:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (0.5 * np.sin(2 * np.pi * freq_hz * t) * 32767).astype("<i2").tobytes()


def feed_pipe(data: bytes, piece: int = 777, delay_s: float = 0.0) -> io.BufferedReader:
    """A pipe whose writer thread sends `data` in odd-sized pieces, then closes it."""
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as out, contextlib.suppress(BrokenPipeError):
            for i in range(0, len(data), piece):
                out.write(data[i : i + piece])
                if delay_s:
                    time.sleep(delay_s)

    threading.Thread(target=writer, daemon=True).start()
    return os.fdopen(read_fd, "rb")


def collect(stream: io.BufferedReader, rate_hz: int, **kwargs: object) -> list[AudioChunk]:
    async def run() -> list[AudioChunk]:
        return [c async for c in pcm_chunks(stream, rate_hz, **kwargs)]  # type: ignore[arg-type]

    with stream:
        return asyncio.run(run())


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE_HZ / len(samples))


def test_s16_decoder_carries_odd_bytes() -> None:
    decoder = S16Decoder()
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    parts = [decoder.push(pcm[:3]), decoder.push(pcm[3:5]), decoder.push(pcm[5:])]
    assert decoder.pending_bytes == 0
    out = np.concatenate(parts)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0, 32767 / 32768])


def test_stdin_16k_passes_through() -> None:
    pcm = tone_pcm(SAMPLE_RATE_HZ, 1.0)
    statuses: list[StatusUpdate] = []
    chunks = collect(feed_pipe(pcm), SAMPLE_RATE_HZ, realtime=False, on_status=statuses.append)
    samples = np.concatenate([c.samples for c in chunks])
    assert len(samples) == SAMPLE_RATE_HZ
    assert all(len(c.samples) == 1600 for c in chunks)
    expected = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    np.testing.assert_array_equal(samples, expected)
    assert [s.capture for s in statuses] == ["starting", "running", "ended"]


@pytest.mark.parametrize("rate_hz", [8_000, 44_100, 48_000])
def test_stdin_other_rates_are_resampled(rate_hz: int) -> None:
    chunks = collect(feed_pipe(tone_pcm(rate_hz, 1.0)), rate_hz, realtime=False)
    samples = np.concatenate([c.samples for c in chunks])
    assert abs(len(samples) - SAMPLE_RATE_HZ) <= 2
    assert peak_hz(samples) == pytest.approx(440, abs=2)
    assert chunks[-1].end_s == pytest.approx(1.0, abs=0.001)


def test_stdin_real_speech(shared_data: Path) -> None:
    speech = decode_file(shared_data / "speech" / "ljspeech" / "LJ001-0002.flac")
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    chunks = collect(feed_pipe(pcm, piece=4096), SAMPLE_RATE_HZ, realtime=False)
    samples = np.concatenate([c.samples for c in chunks])
    np.testing.assert_allclose(samples, speech, atol=1 / 16384)


def test_stdin_realtime_paces_a_fast_writer() -> None:
    t0 = time.monotonic()
    chunks = collect(feed_pipe(tone_pcm(SAMPLE_RATE_HZ, 1.0), piece=32000), SAMPLE_RATE_HZ)
    wall_s = time.monotonic() - t0
    assert chunks[-1].end_s == pytest.approx(1.0)
    assert 0.9 < wall_s < 2.0


def test_stdin_closing_early_does_not_hang() -> None:
    # A writer that keeps the pipe open for a long time; closing the source must return.
    stream = feed_pipe(tone_pcm(SAMPLE_RATE_HZ, 30.0), piece=3200, delay_s=0.1)

    async def run() -> AudioChunk:
        gen = pcm_chunks(stream, SAMPLE_RATE_HZ, realtime=False)
        first = await gen.__anext__()
        await gen.aclose()
        return first

    t0 = time.monotonic()
    with stream:
        first = asyncio.run(run())
    assert first.start_s == 0.0
    assert time.monotonic() - t0 < 2.0


def test_open_source_stdin_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_stdin = io.TextIOWrapper(feed_pipe(tone_pcm(8_000, 0.5)))
    monkeypatch.setattr(sys, "stdin", fake_stdin)

    async def run() -> list[AudioChunk]:
        return [c async for c in open_source(parse_source("stdin:8000"), realtime=False)]

    with fake_stdin:
        chunks = asyncio.run(run())
    assert chunks[-1].end_s == pytest.approx(0.5, abs=0.001)


def test_open_source_without_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(CaptureError, match="no standard input"):
        open_source(parse_source("stdin"))
