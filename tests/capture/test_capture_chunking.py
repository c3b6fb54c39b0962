"""The pure helpers: chunking with audio time, downmix, resampling, pacing deadlines."""

from __future__ import annotations

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture.chunking import (
    MonoResampler,
    Pacer,
    Rechunker,
    block_samples_for,
    downmix,
)


def ramp(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


@pytest.mark.parametrize(
    ("pushes", "block", "sizes"),
    [
        ([1600], 1600, [1600]),
        ([1000, 1000], 1600, [1600]),
        ([4000], 1600, [1600, 1600]),
        ([100] * 40, 1600, [1600, 1600]),
        ([0, 1599, 1], 1600, [1600]),
        ([3], 1, [1, 1, 1]),
    ],
)
def test_rechunker_emits_full_blocks(pushes: list[int], block: int, sizes: list[int]) -> None:
    rechunker = Rechunker(block)
    chunks = []
    offset = 0
    for n in pushes:
        chunks += rechunker.push(ramp(n, offset))
        offset += n
    assert [len(c.samples) for c in chunks] == sizes
    joined = np.concatenate([c.samples for c in chunks])
    np.testing.assert_array_equal(joined, ramp(len(joined)))
    assert [c.start_s for c in chunks] == [i * block / SAMPLE_RATE_HZ for i in range(len(sizes))]


def test_rechunker_flush_and_skip_keep_time() -> None:
    rechunker = Rechunker(1600)
    assert rechunker.push(ramp(2000)) and rechunker.end_s == pytest.approx(0.125)
    (short,) = rechunker.flush()
    assert len(short.samples) == 400 and short.start_s == pytest.approx(0.1)
    assert rechunker.flush() == []
    assert rechunker.skip(2.0) == []
    (after,) = rechunker.push(ramp(1600))
    assert after.start_s == pytest.approx(0.125 + 2.0)
    # skip flushes what is pending, then jumps
    rechunker.push(ramp(800))
    flushed = rechunker.skip(1.0)
    assert len(flushed) == 1 and flushed[0].start_s == pytest.approx(2.225)
    assert rechunker.next_start_s == pytest.approx(2.225 + 0.05 + 1.0)


def test_rechunker_time_does_not_drift() -> None:
    rechunker = Rechunker(1)
    for _ in range(100_000):
        chunks = rechunker.push(np.zeros(1, dtype=np.float32))
    assert chunks[-1].start_s == (100_000 - 1) / SAMPLE_RATE_HZ


def test_rechunker_chunks_do_not_alias_input() -> None:
    rechunker = Rechunker(4)
    data = ramp(4)
    (chunk,) = rechunker.push(data)
    data[:] = -1
    np.testing.assert_array_equal(chunk.samples, ramp(4))


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (np.array([1, 2, 3], dtype=np.float32), [1, 2, 3]),
        (np.array([[1], [2]], dtype=np.float32), [1, 2]),
        (np.array([[1, 3], [2, 0]], dtype=np.float32), [2, 1]),
        (np.array([[1, 1, 4]], dtype=np.float64), [2]),
    ],
)
def test_downmix(frames: np.ndarray, expected: list[float]) -> None:
    mono = downmix(frames)
    assert mono.dtype == np.float32 and mono.ndim == 1
    np.testing.assert_allclose(mono, expected)


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_mono_resampler_streams_a_tone(in_rate: int) -> None:
    seconds = 1.0
    t = np.arange(int(in_rate * seconds)) / in_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = MonoResampler(in_rate)
    parts = [resampler.process(block) for block in np.array_split(tone, 37)]
    parts.append(resampler.flush())
    out = np.concatenate(parts)
    assert out.dtype == np.float32
    assert abs(len(out) - SAMPLE_RATE_HZ * seconds) <= 2
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE_HZ / len(out)
    assert peak_hz == pytest.approx(440, abs=2)


def test_mono_resampler_passthrough() -> None:
    resampler = MonoResampler(SAMPLE_RATE_HZ)
    data = ramp(10)
    assert resampler.process(data) is data
    assert len(resampler.flush()) == 0


@pytest.mark.parametrize(("block_s", "n"), [(0.1, 1600), (0.02, 320), (1e-9, 1), (1.0, 16000)])
def test_block_samples_for(block_s: float, n: int) -> None:
    assert block_samples_for(block_s) == n


@pytest.mark.parametrize("block_s", [0.0, -0.1, float("nan")])
def test_block_samples_for_rejects(block_s: float) -> None:
    with pytest.raises(ValueError, match="block_s"):
        block_samples_for(block_s)


def test_pacer_deadlines_are_absolute() -> None:
    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.delay_s(0.1) == pytest.approx(0.1)  # starts the clock at 100.0
    now[0] = 100.25  # late: no wait, and no drift carried forward
    assert pacer.delay_s(0.2) == 0.0
    assert pacer.delay_s(0.3) == pytest.approx(0.05)
    now[0] = 101.0
    assert pacer.delay_s(1.5) == pytest.approx(0.5)
