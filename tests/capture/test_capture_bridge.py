"""The device bridge without a device: overflow accounting, block assembly, and the
DeviceCapture shell (loss, backoff, recovery, overflow status) driven by a fake stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture import DeviceCapture, RetryPolicy
from subtitled.capture.bridge import Block, BlockAssembler, BlockBridge, RateLimiter
from subtitled.errors import CaptureError, DeviceNotFound
from subtitled.events import AudioChunk, StatusUpdate

NATIVE_HZ = 48_000
BLOCK_FRAMES = 960  # 20 ms at 48 kHz, what PortAudioOpener asks for


def frames(n: int = BLOCK_FRAMES, channels: int = 2, value: float = 0.25) -> np.ndarray:
    return np.full((n, channels), value, dtype=np.float32)


# --- BlockBridge: a fake callback driver -------------------------------------------------


def test_bridge_drops_oldest_and_counts() -> None:
    wakes: list[int] = []
    bridge = BlockBridge(max_blocks=4, wake=lambda: wakes.append(1))
    for i in range(10):  # a callback driver outrunning a stalled consumer
        bridge.push(frames(100, 1, float(i)), device_overflow=(i == 7))
    assert bridge.overflow_count == 6
    assert bridge.dropped_frames == 600
    assert bridge.device_overflow_count == 1
    assert len(wakes) == 1  # one wake-up until the consumer drains
    blocks = bridge.drain()
    assert [b.frames[0, 0] for b in blocks] == [6.0, 7.0, 8.0, 9.0]  # the newest survive
    assert [b.start_frame for b in blocks] == [600, 700, 800, 900]  # the gap is visible
    assert bridge.drain() == []
    bridge.push(frames(100, 1))
    assert len(wakes) == 2  # re-armed by the drain


def test_bridge_accounting_under_a_real_thread() -> None:
    """A producer thread pushes as fast as it can while the consumer drains slowly."""
    bridge = BlockBridge(max_blocks=8, wake=lambda: None)
    n_blocks = 20_000
    drained: list[Block] = []

    def producer() -> None:
        for _ in range(n_blocks):
            bridge.push(frames(10, 1))

    thread = threading.Thread(target=producer)
    thread.start()
    while thread.is_alive():
        drained += bridge.drain()
    thread.join()
    drained += bridge.drain()
    assert len(drained) + bridge.overflow_count == n_blocks
    assert sum(b.n_frames for b in drained) + bridge.dropped_frames == n_blocks * 10
    starts = [b.start_frame for b in drained]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_bridge_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="max_blocks"):
        BlockBridge(0, wake=lambda: None)


# --- BlockAssembler ----------------------------------------------------------------------


def test_assembler_resamples_and_chunks() -> None:
    assembler = BlockAssembler(NATIVE_HZ, block_samples=1600)
    blocks = [Block(i * BLOCK_FRAMES, frames()) for i in range(50)]  # 1 s
    chunks = assembler.feed(blocks) + assembler.end_stretch()
    total = sum(len(c.samples) for c in chunks)
    assert abs(total - SAMPLE_RATE_HZ) <= 2
    assert all(len(c.samples) == 1600 for c in chunks[:-1])
    assert chunks[0].start_s == 0.0
    middle = np.concatenate([c.samples for c in chunks])[2000:-2000]
    np.testing.assert_allclose(middle, 0.25, atol=1e-3)  # downmixed stereo, level kept


def test_assembler_skips_dropped_frames() -> None:
    assembler = BlockAssembler(NATIVE_HZ, block_samples=320)  # 20 ms chunks
    first = assembler.feed([Block(0, frames())])
    # frames 960..(960 + 10 * 960) were dropped: 200 ms of audio time must be skipped
    later = assembler.feed([Block(11 * BLOCK_FRAMES, frames()) for _ in range(1)])
    later += assembler.end_stretch()
    chunks = first + later
    gap_chunk = next(c for c in later if c.start_s > 0.1)
    assert gap_chunk.start_s == pytest.approx(0.22, abs=0.01)
    ends = [c.end_s for c in chunks]
    assert ends == sorted(ends)


def test_assembler_resume_jumps_and_changes_rate() -> None:
    assembler = BlockAssembler(NATIVE_HZ, block_samples=1600)
    before = assembler.feed([Block(i * BLOCK_FRAMES, frames()) for i in range(25)])  # 0.5 s
    resumed = assembler.resume(44_100, gap_s=3.0)
    assert assembler.sample_rate_hz == 44_100
    end_before = (before + resumed)[-1].end_s
    assert end_before == pytest.approx(0.5, abs=0.01)
    after = assembler.feed([Block(i * 882, frames(882)) for i in range(50)])
    assert after[0].start_s == pytest.approx(3.5, abs=0.01)


def test_rate_limiter() -> None:
    limiter = RateLimiter(5.0)
    assert [limiter.allow(t) for t in (0.0, 1.0, 4.9, 5.0, 6.0, 10.1)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert limiter.take_suppressed() == 3 and limiter.take_suppressed() == 0


# --- DeviceCapture with a fake stream ----------------------------------------------------


@dataclass
class FakeStream:
    sample_rate_hz: float
    description: str
    target: str | None = None
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeOpener:
    """Stands in for PortAudio: records callbacks; `failures` make the next opens fail."""

    rate_hz: float = NATIVE_HZ
    failures: list[CaptureError] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    callbacks: list[tuple[Callable[[np.ndarray, bool], None], Callable[[], None]]] = field(
        default_factory=list
    )
    refreshes: list[bool] = field(default_factory=list)
    description: str = "fake device"
    default: str | None = None  # what a default-following source resolves to now
    default_error: CaptureError | None = None  # current_target() raises this

    def open(
        self,
        on_block: Callable[[np.ndarray, bool], None],
        on_finished: Callable[[], None],
        *,
        refresh: bool,
    ) -> FakeStream:
        self.refreshes.append(refresh)
        if self.failures:
            raise self.failures.pop(0)
        stream = FakeStream(self.rate_hz, f"fake stream {len(self.streams)}", self.default)
        self.streams.append(stream)
        self.callbacks.append((on_block, on_finished))
        return stream

    def current_target(self) -> str | None:
        if self.default_error is not None:
            raise self.default_error
        return self.default

    def push(self, n_blocks: int, value: float = 0.25) -> None:
        on_block, _ = self.callbacks[-1]
        for _ in range(n_blocks):
            on_block(frames(value=value), False)

    def finish(self) -> None:
        self.callbacks[-1][1]()


FAST_RETRY = RetryPolicy(initial_s=0.01, factor=2.0, max_s=0.04)


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


class Collector:
    """Consumes a capture's chunks in a task, as the pipeline would."""

    def __init__(self, capture: DeviceCapture) -> None:
        self.chunks: list[AudioChunk] = []
        self._task = asyncio.ensure_future(self._run(capture))

    async def _run(self, capture: DeviceCapture) -> None:
        async for chunk in capture.chunks():
            self.chunks.append(chunk)

    async def stop(self) -> None:
        """Cancel the consumer: the generator closes its stream and reports `ended`."""
        if self._task.done():
            await self._task  # re-raise what ended it
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def test_device_capture_loses_and_recovers() -> None:
    async def scenario() -> tuple[list[AudioChunk], list[StatusUpdate], FakeOpener]:
        now = [1000.0]
        opener = FakeOpener()
        statuses: list[StatusUpdate] = []
        capture = DeviceCapture(
            opener, on_status=statuses.append, retry=FAST_RETRY, clock=lambda: now[0]
        )
        run = Collector(capture)
        await until(lambda: opener.streams)
        opener.push(15)  # 0.3 s
        await until(lambda: len(run.chunks) >= 2)
        # The device vanishes; the next two opens fail, the third succeeds, and 7 s of
        # wall time pass before the new stream's first audio.
        opener.failures += [DeviceNotFound("gone"), CaptureError("busy")]
        now[0] += 7.0
        opener.finish()
        await until(lambda: len(opener.streams) == 2)
        opener.push(10, value=0.5)
        await until(lambda: any(float(np.max(c.samples)) > 0.4 for c in run.chunks))
        await run.stop()
        return run.chunks, statuses, opener

    chunks, statuses, opener = asyncio.run(scenario())
    states = [s.capture for s in statuses]
    assert states == ["starting", "running", "lost", "running", "ended"]
    assert "stopped" in statuses[2].detail
    assert opener.refreshes == [False, True, True, True]  # reopening re-enumerates devices
    assert all(s.closed for s in opener.streams)
    assert [round(c.start_s, 3) for c in chunks[:2]] == [0.0, 0.1]
    before = [c for c in chunks if float(np.max(c.samples)) < 0.4]
    assert before[-1].end_s == pytest.approx(0.3, abs=0.01)  # the tail was flushed
    after = [c for c in chunks if float(np.max(c.samples)) > 0.4]
    # audio time jumped by the 7 s of wall time, less the 0.2 s the new stream delivered
    assert after[0].start_s == pytest.approx(0.3 + 6.8, abs=0.02)
    starts = [c.start_s for c in chunks]
    assert starts == sorted(starts)


def test_device_capture_reopens_after_a_suspend_and_jumps_the_gap() -> None:
    """The machine sleeps for 30 s with the stream open (the clock jumps; on waking the
    stream hands over what it had buffered): the buffered audio is kept, the stream is
    reopened as after a lost device, and audio time jumps over the 30 s."""

    async def scenario() -> tuple[list[AudioChunk], list[StatusUpdate], FakeOpener]:
        now = [1000.0]
        opener = FakeOpener()
        statuses: list[StatusUpdate] = []
        capture = DeviceCapture(
            opener, on_status=statuses.append, retry=FAST_RETRY, clock=lambda: now[0]
        )
        run = Collector(capture)
        await until(lambda: opener.streams)
        opener.push(15)  # 0.3 s
        await until(lambda: len(run.chunks) >= 2)
        now[0] += 30.0  # asleep
        opener.push(10, value=0.1)  # 0.2 s the stream buffered before the sleep
        await until(lambda: len(opener.streams) == 2)
        opener.push(10, value=0.5)
        await until(lambda: any(float(np.max(c.samples)) > 0.4 for c in run.chunks))
        await run.stop()
        return run.chunks, statuses, opener

    chunks, statuses, opener = asyncio.run(scenario())
    assert [s.capture for s in statuses] == ["starting", "running", "lost", "running", "ended"]
    assert "suspended" in statuses[2].detail
    assert opener.streams[0].closed
    buffered = [c for c in chunks if 0.05 < float(np.max(c.samples)) < 0.2]
    assert buffered[-1].end_s == pytest.approx(0.5, abs=0.01)  # kept, before the gap
    after = [c for c in chunks if float(np.max(c.samples)) > 0.4]
    assert after[0].start_s == pytest.approx(0.3 + 30.0, abs=0.05)
    starts = [c.start_s for c in chunks]
    assert starts == sorted(starts)


def test_device_capture_first_open_error_propagates() -> None:
    async def scenario() -> list[StatusUpdate]:
        statuses: list[StatusUpdate] = []
        opener = FakeOpener(failures=[DeviceNotFound("no input device matching 'x'")])
        gen = DeviceCapture(opener, on_status=statuses.append).chunks()
        with pytest.raises(DeviceNotFound, match="'x'"):
            await gen.__anext__()
        return statuses

    assert [s.capture for s in asyncio.run(scenario())] == ["starting"]


def test_device_capture_stall_counts_as_lost() -> None:
    async def scenario() -> list[StatusUpdate]:
        statuses: list[StatusUpdate] = []
        opener = FakeOpener()
        capture = DeviceCapture(
            opener, on_status=statuses.append, retry=FAST_RETRY, stall_timeout_s=0.1
        )
        run = Collector(capture)
        await until(lambda: len(opener.streams) >= 2)  # no audio: lost after 0.1 s, reopened
        opener.push(10)
        await until(lambda: run.chunks)
        await run.stop()
        return statuses

    statuses = asyncio.run(scenario())
    assert [s.capture for s in statuses][:4] == ["starting", "running", "lost", "running"]
    assert "no audio for 0.1 s" in statuses[2].detail
    assert statuses[-1].capture == "ended"


def test_device_capture_overflow_drops_oldest_and_reports() -> None:
    async def scenario() -> tuple[DeviceCapture, list[AudioChunk], list[StatusUpdate]]:
        statuses: list[StatusUpdate] = []
        opener = FakeOpener()
        # 0.1 s of buffer = 5 callback blocks of 20 ms
        capture = DeviceCapture(opener, on_status=statuses.append, max_buffer_s=0.1)
        run = Collector(capture)
        await until(lambda: [s for s in statuses if s.capture == "running"])
        # The consumer does not get to run while 25 blocks (0.5 s) arrive.
        opener.push(25)
        await until(lambda: [s for s in statuses if "overflow" in s.detail])  # drained
        opener.push(5)  # no more than the buffer holds: nothing else is dropped
        await until(lambda: run.chunks)
        await run.stop()
        return capture, run.chunks, statuses

    capture, chunks, statuses = asyncio.run(scenario())
    assert capture.overflow_count == 20
    overflow = [s for s in statuses if "overflow" in s.detail]
    assert len(overflow) == 1 and overflow[0].capture == "running"
    assert overflow[0].overflow_count == 20
    # the 20 dropped blocks (0.4 s) are a gap in audio time, not silently closed up
    assert chunks[0].start_s == pytest.approx(0.4, abs=0.01)
    assert statuses[-1].capture == "ended" and statuses[-1].overflow_count == 20


def test_device_capture_follows_a_new_default_while_the_old_one_stays() -> None:
    """A headset plugged in becomes the default output while the speakers remain: a
    `monitor` capture (which follows the default) reopens on the new one, says so in one
    `running` status (no `lost`), and audio time goes on without a jump."""

    async def scenario() -> tuple[list[AudioChunk], list[StatusUpdate], FakeOpener]:
        opener = FakeOpener(default="speakers")
        statuses: list[StatusUpdate] = []
        capture = DeviceCapture(
            opener, on_status=statuses.append, retry=FAST_RETRY, follow_interval_s=0.02
        )
        run = Collector(capture)
        await until(lambda: opener.streams)
        opener.push(15)  # 0.3 s
        await until(lambda: len(run.chunks) >= 2)
        await asyncio.sleep(0.1)  # several polls of an unchanged default: nothing happens
        assert len(opener.streams) == 1
        opener.default = "headset"
        await until(lambda: len(opener.streams) == 2)
        opener.push(10, value=0.5)
        await until(lambda: any(float(np.max(c.samples)) > 0.4 for c in run.chunks))
        await run.stop()
        return run.chunks, statuses, opener

    chunks, statuses, opener = asyncio.run(scenario())
    assert [s.capture for s in statuses] == ["starting", "running", "running", "ended"]
    assert "'speakers' to 'headset'" in statuses[2].detail
    assert [s.target for s in opener.streams] == ["speakers", "headset"]
    assert opener.streams[0].closed
    starts = [c.start_s for c in chunks]
    assert starts == sorted(starts)
    after = next(c for c in chunks if float(np.max(c.samples)) > 0.4)
    assert after.start_s == pytest.approx(0.3, abs=0.1)  # a switch is no gap


def test_device_capture_with_a_fixed_target_or_a_failing_query_stays_put() -> None:
    """A source that names its device (target None) is never reopened by the follower,
    and a sound server that cannot say what the default is (pactl failing) is no loss."""

    async def scenario(opener: FakeOpener) -> list[StatusUpdate]:
        statuses: list[StatusUpdate] = []
        capture = DeviceCapture(
            opener, on_status=statuses.append, retry=FAST_RETRY, follow_interval_s=0.01
        )
        run = Collector(capture)
        await until(lambda: opener.streams)
        opener.push(10)
        await asyncio.sleep(0.15)
        await run.stop()
        return statuses

    fixed = FakeOpener()
    assert [s.capture for s in asyncio.run(scenario(fixed))] == ["starting", "running", "ended"]
    assert len(fixed.streams) == 1
    failing = FakeOpener(default="speakers", default_error=CaptureError("pactl info failed"))
    assert [s.capture for s in asyncio.run(scenario(failing))] == [
        "starting", "running", "ended"
    ]
    assert len(failing.streams) == 1
