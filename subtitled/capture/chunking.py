"""Pure helpers shared by every source: fixed-size chunks with audio-time stamps, downmixing,
streaming resampling, and real-time pacing against a monotonic deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.errors import InvalidArgument
from subtitled.events import AudioChunk

FloatArray = npt.NDArray[np.float32]


def block_samples_for(block_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> int:
    """Samples in one chunk of `block_s` seconds (at least one)."""
    if not block_s > 0:
        raise InvalidArgument(f"block_s must be positive, got {block_s}")
    return max(1, round(block_s * sample_rate_hz))


def downmix(frames: npt.NDArray[np.floating]) -> FloatArray:
    """(n, channels) or (n,) samples -> (n,) float32 mono, the mean of the channels."""
    if frames.ndim == 1:
        mono: FloatArray = frames.astype(np.float32, copy=False)
    elif frames.shape[1] == 1:
        mono = np.ascontiguousarray(frames[:, 0], dtype=np.float32)
    else:
        mono = frames.mean(axis=1, dtype=np.float32)
    return mono


class MonoResampler:
    """Streaming resampling of mono float32 audio to `SAMPLE_RATE_HZ` with soxr.

    A pass-through when the input is already at the target rate. `flush()` ends one
    continuous stretch (it returns soxr's buffered tail); the resampler can then be
    reused for the next stretch.
    """

    def __init__(self, in_rate_hz: float, out_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream: _Resampler | None = None

    def _soxr(self) -> _Resampler:
        if self._stream is None:
            import soxr

            self._stream = soxr.ResampleStream(
                self.in_rate_hz, self.out_rate_hz, 1, dtype="float32", quality="HQ"
            )
        return self._stream

    @property
    def passthrough(self) -> bool:
        return self.in_rate_hz == self.out_rate_hz

    def process(self, samples: FloatArray) -> FloatArray:
        if self.passthrough:
            return samples
        out: FloatArray = self._soxr().resample_chunk(samples, last=False)
        return out

    def flush(self) -> FloatArray:
        if self.passthrough or self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out: FloatArray = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream = None
        return out


class _Resampler(Protocol):
    """The part of `soxr.ResampleStream` used here (soxr ships no type hints for it)."""

    def resample_chunk(self, x: FloatArray, last: bool = False) -> FloatArray: ...


class Rechunker:
    """Cuts a stream of mono samples into `AudioChunk`s of exactly `block_samples`.

    Audio time is counted in samples from a base, so it never drifts; `skip()` moves the
    base forward over a gap (device lost, buffer overflow) so downstream sees the gap.
    """

    def __init__(
        self, block_samples: int, sample_rate_hz: int = SAMPLE_RATE_HZ, start_s: float = 0.0
    ) -> None:
        if block_samples < 1:
            raise InvalidArgument(f"block_samples must be >= 1, got {block_samples}")
        self.block_samples = block_samples
        self.sample_rate_hz = sample_rate_hz
        self._base_s = start_s
        self._emitted = 0  # samples emitted since _base_s
        self._pending: list[FloatArray] = []
        self._pending_len = 0

    @property
    def next_start_s(self) -> float:
        """Audio time of the next sample to be emitted."""
        return self._base_s + self._emitted / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        """Audio time just after the last sample pushed (emitted or pending)."""
        return self._base_s + (self._emitted + self._pending_len) / self.sample_rate_hz

    def push(self, samples: FloatArray) -> list[AudioChunk]:
        """Add samples; return the full chunks now available."""
        if len(samples):
            self._pending.append(samples.astype(np.float32, copy=False))
            self._pending_len += len(samples)
        if self._pending_len < self.block_samples:
            return []
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_full = len(data) // self.block_samples
        chunks = [
            self._emit(data[i * self.block_samples : (i + 1) * self.block_samples])
            for i in range(n_full)
        ]
        rest = data[n_full * self.block_samples :]
        self._pending = [rest] if len(rest) else []
        self._pending_len = len(rest)
        return chunks

    def flush(self) -> list[AudioChunk]:
        """Emit what is pending as one short chunk (none if nothing is pending)."""
        if not self._pending_len:
            return []
        data = np.concatenate(self._pending)
        self._pending = []
        self._pending_len = 0
        return [self._emit(data)]

    def skip(self, gap_s: float) -> list[AudioChunk]:
        """Flush, then move audio time forward by `gap_s` (a gap with no samples)."""
        chunks = self.flush()
        if gap_s > 0:
            self._base_s = self.next_start_s + gap_s
            self._emitted = 0
        return chunks

    def _emit(self, samples: FloatArray) -> AudioChunk:
        # Copy so a chunk never aliases a buffer that is reused or mutated later.
        chunk = AudioChunk(samples=np.array(samples, dtype=np.float32), start_s=self.next_start_s)
        self._emitted += len(samples)
        return chunk


@dataclass
class Pacer:
    """Releases audio no faster than real time: audio time t is due at `t0 + t` on `clock`.

    Deadlines are absolute, so per-chunk scheduling jitter does not accumulate into drift.
    """

    clock: Callable[[], float] = time.monotonic
    t0: float | None = None

    def delay_s(self, audio_s: float) -> float:
        """Seconds to wait before audio time `audio_s` is due (starts the clock on first use)."""
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        return max(0.0, self.t0 + audio_s - now)

    async def wait_until(self, audio_s: float) -> None:
        delay = self.delay_s(audio_s)
        if delay > 0:
            await asyncio.sleep(delay)


async def release(chunk: AudioChunk, pacer: Pacer | None) -> AudioChunk:
    """Return `chunk` once it is due: at its end time with a pacer, else after one loop turn."""
    if pacer is not None:
        await pacer.wait_until(chunk.end_s)
    else:
        await asyncio.sleep(0)  # let other tasks run between chunks
    return chunk
