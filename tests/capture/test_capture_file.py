"""Files through PyAV: real clips from ../shared/data, pacing, and decode errors."""

from __future__ import annotations

import asyncio
import itertools
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import decode_file, open_source, parse_source
from subtitled.capture.file import FileDecoder, file_chunks
from subtitled.errors import AudioDecodeError, CaptureError
from subtitled.events import AudioChunk, StatusUpdate

LJ_0001_S = 9.66  # manifest.tsv
LJ_0002_S = 1.90


@pytest.fixture(scope="module")
def lj1(shared_data: Path) -> Path:
    return shared_data / "speech" / "ljspeech" / "LJ001-0001.flac"


@pytest.fixture(scope="module")
def lj2(shared_data: Path) -> Path:
    return shared_data / "speech" / "ljspeech" / "LJ001-0002.flac"


def collect(path: Path, **kwargs: object) -> tuple[list[AudioChunk], list[StatusUpdate], float]:
    statuses: list[StatusUpdate] = []

    async def run() -> list[AudioChunk]:
        return [c async for c in file_chunks(path, on_status=statuses.append, **kwargs)]  # type: ignore[arg-type]

    t0 = time.monotonic()
    chunks = asyncio.run(run())
    return chunks, statuses, time.monotonic() - t0


def write_wav(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """Write float samples (n,) or (n, channels) as 16-bit PCM WAV."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes((np.clip(frames, -1, 1) * 32767).astype("<i2").tobytes())


def test_decode_file_real_clip(lj1: Path) -> None:
    samples = decode_file(lj1)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / SAMPLE_RATE_HZ == pytest.approx(LJ_0001_S, abs=0.01)
    assert 0.1 < float(np.max(np.abs(samples))) <= 1.0
    assert float(np.sqrt(np.mean(samples**2))) > 0.01  # speech, not silence


def test_decode_resamples_and_downmixes(tmp_path: Path) -> None:
    rate = 44_100
    t = np.arange(rate * 2) / rate  # 2 s
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "tone.wav"
    write_wav(path, stereo, rate)
    samples = decode_file(path)
    assert abs(len(samples) - 2 * SAMPLE_RATE_HZ) <= 2
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert np.argmax(spectrum) * SAMPLE_RATE_HZ / len(samples) == pytest.approx(440, abs=1)
    # FFmpeg downmixes equal channels at -3 dB each: 0.4 * 2 / sqrt(2)
    assert float(np.max(np.abs(samples))) == pytest.approx(0.4 * np.sqrt(2), abs=0.02)


def test_fast_chunks_cover_the_file(lj1: Path) -> None:
    chunks, statuses, wall_s = collect(lj1, realtime=False, block_s=0.1)
    assert all(len(c.samples) == 1600 for c in chunks[:-1])
    assert 0 < len(chunks[-1].samples) <= 1600
    for before, after in itertools.pairwise(chunks):
        assert after.start_s == pytest.approx(before.end_s)
    assert chunks[-1].end_s == pytest.approx(LJ_0001_S, abs=0.01)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), decode_file(lj1))
    assert wall_s < LJ_0001_S / 5, f"fast mode took {wall_s:.2f} s for {LJ_0001_S} s of audio"
    assert [s.capture for s in statuses] == ["starting", "running", "ended"]


def test_realtime_pacing_is_about_one_x(lj2: Path) -> None:
    arrivals: list[tuple[float, AudioChunk]] = []

    async def run() -> None:
        async for chunk in file_chunks(lj2, realtime=True, block_s=0.1):
            arrivals.append((time.monotonic(), chunk))

    t0 = time.monotonic()
    asyncio.run(run())
    wall_s = time.monotonic() - t0
    assert 0.9 * LJ_0002_S < wall_s < 1.5 * LJ_0002_S + 0.5
    # every chunk is released near its end time after the first: no drift builds up
    first_at, first = arrivals[0]
    lateness = [at - first_at - (c.end_s - first.end_s) for at, c in arrivals]
    assert min(lateness) > -0.01  # never early
    assert max(lateness) < 0.25


def test_block_size_is_honoured(lj2: Path) -> None:
    chunks, _, _ = collect(lj2, realtime=False, block_s=0.25)
    assert {len(c.samples) for c in chunks[:-1]} == {4000}


def test_open_source_file_spec(lj2: Path) -> None:
    async def run() -> list[AudioChunk]:
        return [c async for c in open_source(parse_source(f"file:{lj2}"), realtime=False)]

    chunks = asyncio.run(run())
    assert chunks[-1].end_s == pytest.approx(LJ_0002_S, abs=0.01)


def test_closing_early_releases_the_file(lj1: Path) -> None:
    async def run() -> AudioChunk:
        gen = file_chunks(lj1, realtime=False)
        first = await gen.__anext__()
        await gen.aclose()
        return first

    assert asyncio.run(run()).start_s == 0.0


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.txt", "this is not audio\n" * 20, "Invalid data"),
        ("fake.wav", "RIFF but not really a wave file\n", "Invalid data"),
        ("empty.flac", "", "no samples"),
    ],
)
def test_non_audio_file_is_a_decode_error(
    tmp_path: Path, name: str, content: str, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(AudioDecodeError) as info:
        decode_file(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value) or "no audio stream" in str(info.value)


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.flac"
    with pytest.raises(AudioDecodeError, match="no such file") as info:
        decode_file(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, CaptureError)


def test_directory_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="directory"):
        decode_file(tmp_path)


def test_async_errors_surface_on_first_chunk(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")

    async def run() -> None:
        async for _ in open_source(parse_source(f"file:{path}")):
            pass

    with pytest.raises(AudioDecodeError) as info:
        asyncio.run(run())
    assert str(path) in str(info.value)


def test_decoder_reads_in_steps(lj2: Path) -> None:
    with FileDecoder(lj2) as decoder:
        first = decoder.read(1000)
        assert first is not None and len(first) >= 1000
        rest = decoder.read(10**9)
        assert rest is not None
        assert decoder.read(1) is None
    assert (len(first) + len(rest)) / SAMPLE_RATE_HZ == pytest.approx(LJ_0002_S, abs=0.01)
