"""The device bridge's pure parts: the real-time thread hand-off and block -> chunk assembly.

PortAudio calls its callback on its own real-time thread, where nothing may block or take
long. `BlockBridge.push` only appends a copy of the block to a bounded deque (dropping the
oldest block when full) and, at most once per drain, asks the loop to wake up. The asyncio
side calls `drain()` and feeds the blocks to a `BlockAssembler`, which turns native-rate,
multi-channel frames into 16 kHz mono `AudioChunk`s and keeps audio time right across
dropped blocks and device gaps.

Nothing here touches PortAudio, the event loop or a clock, so tests drive it directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture.chunking import MonoResampler, Rechunker, downmix
from subtitled.errors import InvalidArgument
from subtitled.events import AudioChunk


@dataclass(frozen=True)
class Block:
    """One callback's worth of frames, numbered in the producer's running frame count."""

    start_frame: int
    frames: npt.NDArray[np.float32]  # (n, channels)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


class BlockBridge:
    """A bounded, drop-oldest hand-off from one producer thread to the asyncio loop.

    Thread-safety rests on CPython's atomic `deque.append`/`popleft` and on there being
    one producer: only the producer writes the counters, the consumer only reads them.
    `wake` is called from the producer thread and must itself be thread-safe (the shell
    passes `loop.call_soon_threadsafe(event.set)`); it is called at most once between
    two drains, so a fast device cannot flood the loop's ready queue.
    """

    def __init__(self, max_blocks: int, wake: Callable[[], None]) -> None:
        if max_blocks < 1:
            raise InvalidArgument(f"max_blocks must be >= 1, got {max_blocks}")
        self.max_blocks = max_blocks
        self._wake = wake
        self._blocks: deque[Block] = deque()
        self._wake_pending = False
        self._next_frame = 0
        self.overflow_count = 0
        """Blocks dropped because the consumer fell `max_blocks` behind."""
        self.dropped_frames = 0
        self.device_overflow_count = 0
        """Callbacks in which the device itself reported lost input (PortAudio input overflow)."""

    def push(self, frames: npt.NDArray[np.float32], device_overflow: bool = False) -> None:
        """Producer side (the real-time thread): never blocks. `frames` must be a copy."""
        if device_overflow:
            self.device_overflow_count += 1
        if len(self._blocks) >= self.max_blocks:
            try:
                dropped = self._blocks.popleft()
            except IndexError:  # the consumer drained it meanwhile
                pass
            else:
                self.overflow_count += 1
                self.dropped_frames += dropped.n_frames
        self._blocks.append(Block(self._next_frame, frames))
        self._next_frame += int(frames.shape[0])
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    def drain(self) -> list[Block]:
        """Consumer side (the loop): take every queued block, oldest first."""
        # Clear the flag before taking blocks: a block pushed after this line wakes us again.
        self._wake_pending = False
        out: list[Block] = []
        while True:
            try:
                out.append(self._blocks.popleft())
            except IndexError:
                return out

    @property
    def pending_blocks(self) -> int:
        return len(self._blocks)


class BlockAssembler:
    """Native-rate multi-channel blocks -> 16 kHz mono `AudioChunk`s of a fixed size.

    Audio time advances by the samples delivered, by the frames of dropped blocks (a gap
    in the block numbering) and by `resume(gap_s=...)` after a device was lost, so the
    chunk timestamps stay on the wall clock and downstream sees every gap.
    """

    def __init__(self, sample_rate_hz: float, block_samples: int) -> None:
        self.rechunker = Rechunker(block_samples, SAMPLE_RATE_HZ)
        self._resampler = MonoResampler(sample_rate_hz)
        self._next_frame = 0

    @property
    def sample_rate_hz(self) -> float:
        return self._resampler.in_rate_hz

    def feed(self, blocks: list[Block]) -> list[AudioChunk]:
        chunks: list[AudioChunk] = []
        for block in blocks:
            gap_frames = block.start_frame - self._next_frame
            if gap_frames > 0:
                chunks += self.rechunker.push(self._resampler.flush())
                chunks += self.rechunker.skip(gap_frames / self.sample_rate_hz)
            self._next_frame = block.start_frame + block.n_frames
            chunks += self.rechunker.push(self._resampler.process(downmix(block.frames)))
        return chunks

    def end_stretch(self) -> list[AudioChunk]:
        """The device stopped: emit everything buffered, including a short last chunk."""
        chunks = self.rechunker.push(self._resampler.flush())
        return chunks + self.rechunker.flush()

    def resume(self, sample_rate_hz: float, gap_s: float) -> list[AudioChunk]:
        """A new stream (maybe at another rate) starts `gap_s` after the last one ended."""
        chunks = self.end_stretch() + self.rechunker.skip(gap_s)
        self._resampler = MonoResampler(sample_rate_hz)
        self._next_frame = 0
        return chunks


@dataclass
class RateLimiter:
    """Allows one event per `interval_s` of the caller's clock; counts the ones it holds back."""

    interval_s: float
    last: float | None = None
    suppressed: int = 0

    def allow(self, now: float) -> bool:
        if self.last is None or now - self.last >= self.interval_s:
            self.last = now
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
