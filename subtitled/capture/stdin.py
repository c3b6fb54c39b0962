"""Raw PCM on standard input (s16le mono), resampled to 16 kHz when it is at another rate.

A daemon thread reads the stream (a blocking read would stall the loop; `connect_read_pipe`
refuses regular files, which `< file.raw` gives) and hands byte blocks to the loop through
a queue bounded by a semaphore. When the queue is full the reader waits, so a fast writer is
slowed down by the pipe instead of losing audio. A reader blocked in `read` cannot be
interrupted; being a daemon thread, it ends with the process or at the writer's EOF.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture.chunking import (
    FloatArray,
    MonoResampler,
    Pacer,
    Rechunker,
    block_samples_for,
    release,
)
from subtitled.errors import CaptureError
from subtitled.events import AudioChunk, CaptureState, StatusUpdate

log = logging.getLogger(__name__)

BYTES_PER_SAMPLE = 2  # s16le
QUEUE_BLOCKS = 50
_SLOT_POLL_S = 0.25


class S16Decoder:
    """Bytes of s16le mono PCM -> float32 in [-1, 1); keeps an odd trailing byte for later."""

    def __init__(self) -> None:
        self._carry = b""

    def push(self, data: bytes) -> FloatArray:
        data = self._carry + data
        usable = len(data) - len(data) % BYTES_PER_SAMPLE
        self._carry = data[usable:]
        pcm = np.frombuffer(data[:usable], dtype="<i2")
        out: FloatArray = pcm.astype(np.float32) / np.float32(32768.0)
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._carry)


async def pcm_chunks(
    stream: BinaryIO,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    *,
    realtime: bool = True,
    block_s: float = 0.1,
    on_status: Callable[[StatusUpdate], None] | None = None,
    name: str = "stdin",
) -> AsyncGenerator[AudioChunk, None]:
    """Chunks of `block_s` from raw s16le mono PCM on `stream`, until EOF.

    With `realtime`, no chunk is released before its audio time has passed since the
    first one (a no-op for a live writer; it paces a file piped in).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | OSError | None] = asyncio.Queue()
    slots = threading.Semaphore(QUEUE_BLOCKS)  # bounds the queue: the reader waits for a slot
    stop = threading.Event()
    read_size = block_samples_for(block_s, sample_rate_hz) * BYTES_PER_SAMPLE
    reader = threading.Thread(
        target=_read_blocks,
        args=(stream, read_size, _Handoff(loop, queue, slots, stop)),
        name=f"subtitled-{name}-reader",
        daemon=True,
    )
    decoder = S16Decoder()
    resampler = MonoResampler(sample_rate_hz)
    rechunker = Rechunker(block_samples_for(block_s))
    pacer = Pacer() if realtime else None

    def status(state: CaptureState, detail: str) -> None:
        if on_status is not None:
            on_status(StatusUpdate(capture=state, detail=detail))

    detail = f"{name}: s16le mono {sample_rate_hz} Hz"
    status("starting", detail)
    reader.start()
    status("running", detail)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, OSError):
                raise CaptureError(f"reading {name} failed: {item}") from item
            slots.release()
            for chunk in rechunker.push(resampler.process(decoder.push(item))):
                yield await release(chunk, pacer)
        if decoder.pending_bytes:
            log.warning("%s ended in the middle of a sample; dropped 1 byte", name)
        for chunk in rechunker.push(resampler.flush()) + rechunker.flush():
            yield await release(chunk, pacer)
        log.info("%s ended after %.2f s of audio", name, rechunker.end_s)
        status("ended", detail)
    finally:
        stop.set()


@dataclass(frozen=True)
class _Handoff:
    """The reader thread's way into the loop: a queue bounded by `slots`, and a stop flag."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | OSError | None]
    slots: threading.Semaphore
    stop: threading.Event

    def send(self, item: bytes | OSError | None) -> bool:
        """Queue `item` (data waits for a free slot); False once nobody is listening."""
        if isinstance(item, bytes):
            while not self.slots.acquire(timeout=_SLOT_POLL_S):
                if self.stop.is_set() or self.loop.is_closed():
                    return False
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            return False
        return not self.stop.is_set()


def _read_blocks(stream: BinaryIO, read_size: int, handoff: _Handoff) -> None:
    """The reader thread: blocks of up to `read_size` bytes, then None at EOF."""
    read = getattr(stream, "read1", stream.read)
    try:
        while not handoff.stop.is_set():
            data = read(read_size)
            if not data:
                break
            if not handoff.send(bytes(data)):
                return
    except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
        handoff.send(exc if isinstance(exc, OSError) else OSError(str(exc)))
        return
    handoff.send(None)
