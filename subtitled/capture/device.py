"""Live capture from a sound device or a PulseAudio monitor, bridged into asyncio.

`DeviceCapture` is the async shell: it opens a stream through a `StreamOpener` in a worker
thread, turns the blocks the PortAudio callback hands over (`BlockBridge`) into 16 kHz
chunks (`BlockAssembler`), and when the stream stops or stalls it reports `lost`, reopens
with exponential backoff and reports `running` again; audio time jumps over the gap. A
source that names no device of its own (`monitor`: the default output) follows the
default: when another output becomes the default while the old one still exists, the
stream is reopened on the new one and a `running` status says so.

`PortAudioOpener` is the only code that talks to PortAudio; tests substitute fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from subtitled.capture import portaudio, pulse
from subtitled.capture.bridge import Block, BlockAssembler, BlockBridge, RateLimiter
from subtitled.capture.chunking import block_samples_for
from subtitled.capture.source import SourceSpec
from subtitled.errors import CaptureError, InvalidArgument, InvalidState
from subtitled.events import AudioChunk, CaptureState, StatusUpdate

log = logging.getLogger(__name__)

StatusCallback = Callable[[StatusUpdate], None]
BlockCallback = Callable[[npt.NDArray[np.float32], bool], None]
"""Called on the audio thread with a copy of one block (n, channels) and its overflow flag."""

CALLBACK_BLOCK_S = 0.02
"""PortAudio callback period: short, so latency stays low and one block is a small copy."""
OVERFLOW_LOG_INTERVAL_S = 5.0
FOLLOW_INTERVAL_S = 2.0
"""How often a default-following source asks the sound server what the default is now
(one `pactl` call, a few ms of CPU)."""
SUSPEND_GAP_S = 5.0
"""Audio missing for longer than this (wall time passed, no audio delivered for it, with
the stream still open) means the machine was suspended or the daemon stopped: the
stream is reopened as after a lost device, and audio time jumps over the gap."""


def boottime() -> float:
    """Seconds of a clock that keeps counting through system suspend (Linux's
    CLOCK_BOOTTIME; elsewhere the monotonic clock, which may not)."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for reopening a lost device: initial_s, times factor, up to max_s."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0

    def delay_s(self, attempt: int) -> float:
        """The wait before reopening attempt `attempt` (0-based)."""
        return float(min(self.max_s, self.initial_s * self.factor**attempt))


class OpenedStream(Protocol):
    """A running input stream: its native rate, a description for logs, and a way to stop it."""

    @property
    def sample_rate_hz(self) -> float: ...

    @property
    def description(self) -> str: ...

    @property
    def target(self) -> str | None:
        """What a default-following source resolved to when it opened (the default sink's
        name for `monitor`); None for a source that names its device."""
        ...

    def close(self) -> None: ...


class StreamOpener(Protocol):
    """Opens and starts an input stream; blocking, so it runs in a worker thread.

    `on_block` and `on_finished` are called from the audio thread. `refresh` asks for the
    device list to be re-enumerated first (a device may have come back). Raises
    `DeviceNotFound` or another `CaptureError`.
    """

    @property
    def description(self) -> str: ...

    def open(
        self, on_block: BlockCallback, on_finished: Callable[[], None], *, refresh: bool
    ) -> OpenedStream: ...

    def current_target(self) -> str | None:
        """What opening now would resolve to, for a source that follows a default (blocking:
        it may ask the sound server); None for a source that names its device."""
        ...


class DeviceCapture:
    """Chunks from a live stream, surviving device loss. Iterate `chunks()` once.

    The bridge holds at most `max_buffer_s` of audio; when the consumer falls further
    behind, the oldest blocks are dropped, counted in `overflow_count`, logged (at most
    every few seconds) and reported as a `running` status carrying the count, and audio
    time skips the dropped span. No audio for `stall_timeout_s` counts as a lost device.
    Every `follow_interval_s` (None: never) the opener is asked for its current target;
    when it differs from the open stream's, the stream is closed and reopened on it.
    """

    def __init__(
        self,
        opener: StreamOpener,
        *,
        block_s: float = 0.1,
        on_status: StatusCallback | None = None,
        max_buffer_s: float = 2.0,
        retry: RetryPolicy = RetryPolicy(),
        stall_timeout_s: float = 3.0,
        follow_interval_s: float | None = FOLLOW_INTERVAL_S,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self._opener = opener
        self._block_samples = block_samples_for(block_s)
        self._on_status = on_status
        self._max_blocks = max(1, round(max_buffer_s / CALLBACK_BLOCK_S))
        self._retry = retry
        self._stall_timeout_s = stall_timeout_s
        self._follow_interval_s = follow_interval_s
        self._clock = clock
        self._event = asyncio.Event()
        self._bridge: BlockBridge | None = None
        self._generation = 0
        self._live_generation: int | None = None
        self._lost_reason: str | None = None
        self._switch_reason: str | None = None  # the default moved: reopen, not lost
        self._stream_target: str | None = None
        self._dropped_before = 0  # overflow counts of bridges of earlier streams
        self._device_overflows_before = 0
        self._reported_overflows = 0
        self._overflow_log = RateLimiter(OVERFLOW_LOG_INTERVAL_S)

    @property
    def overflow_count(self) -> int:
        """Blocks dropped because the consumer fell behind, plus device-reported overruns."""
        return self._dropped_blocks + self._device_overflows

    @property
    def _dropped_blocks(self) -> int:
        return self._dropped_before + (
            self._bridge.overflow_count if self._bridge is not None else 0
        )

    @property
    def _device_overflows(self) -> int:
        bridge = self._bridge
        bridge_count = bridge.device_overflow_count if bridge is not None else 0
        return self._device_overflows_before + bridge_count

    async def chunks(self) -> AsyncGenerator[AudioChunk, None]:
        """Yield chunks until closed; the first open's errors propagate, later ones are retried."""
        if self._generation:
            raise InvalidState("DeviceCapture.chunks() can be iterated only once")
        self._status("starting", self._opener.description)
        stream = await self._open(refresh=False)
        is_open = True
        assembler = BlockAssembler(stream.sample_rate_hz, self._block_samples)
        self._status("running", stream.description)
        last_audio_at = self._clock()
        resuming = False  # reopened, waiting for the new stream's first audio
        watcher = (
            asyncio.ensure_future(self._follow_default(self._follow_interval_s))
            if self._follow_interval_s is not None
            else None
        )
        try:
            while True:
                blocks = await self._next_blocks()
                now = self._clock()
                if blocks and not resuming:
                    delivered_s = sum(b.n_frames for b in blocks) / stream.sample_rate_hz
                    missing_s = now - last_audio_at - delivered_s
                    if missing_s > SUSPEND_GAP_S:
                        # Suspended (or SIGSTOPped): what the stream buffered is from before;
                        # after it, the audio of the gap is missing. Reopen (the device may
                        # have changed meanwhile) and let audio time jump over the gap.
                        for chunk in assembler.feed(blocks):
                            yield chunk
                        blocks = []
                        self._lost_reason = (
                            f"no audio for {missing_s:.0f} s (the machine was suspended or "
                            "the daemon stopped); reopening"
                        )
                if blocks and resuming:
                    # The gap is the wall time since the old stream's last audio, less what
                    # the new stream has delivered by now (a device can take a while to start).
                    delivered_s = sum(b.n_frames for b in blocks) / stream.sample_rate_hz
                    gap_s = max(0.0, now - last_audio_at - delivered_s)
                    for chunk in assembler.resume(stream.sample_rate_hz, gap_s):
                        yield chunk
                    resuming = False
                    log.info("audio flows again after a %.1f s gap", gap_s)
                if blocks:
                    last_audio_at = now
                for chunk in assembler.feed(blocks):
                    yield chunk
                self._check_overflow()
                if self._lost_reason is None and self._switch_reason is None:
                    continue
                # Lost, or the default moved: flush what we have, close, reopen (with
                # backoff). A switch is no loss: no `lost` status, one `running` after it.
                for chunk in assembler.end_stretch():
                    yield chunk
                lost, switch = self._lost_reason, self._switch_reason
                is_open = False
                await self._close(stream)
                if lost is not None:
                    log.warning("capture lost (%s): %s", self._opener.description, lost)
                    self._status("lost", lost)
                else:
                    log.info("capture follows the default (%s): %s", self._opener.description,
                             switch)
                stream = await self._reopen()
                is_open = True
                resuming = True
                log.info("capture reopened: %s", stream.description)
                if lost is not None:
                    self._status("running", f"recovered: {stream.description}")
                else:
                    self._status("running", f"{switch}; now {stream.description}")
        finally:
            if watcher is not None:
                watcher.cancel()
            if is_open:
                await self._close(stream)
            self._status("ended", self._opener.description)

    async def _next_blocks(self) -> list[Block]:
        """Wait for blocks, a lost stream, or the stall timeout (which marks the stream lost)."""
        bridge = self._bridge
        if bridge is None:
            raise InvalidState("no stream is open")
        # Clear, then drain: drain() re-arms the producer's wake-up first, so any block
        # pushed from here on sets the event again after this clear.
        self._event.clear()
        blocks = bridge.drain()
        if blocks or self._lost_reason is not None or self._switch_reason is not None:
            return blocks
        waited_from = self._clock()
        try:
            await asyncio.wait_for(self._event.wait(), self._stall_timeout_s)
        except TimeoutError:
            waited_s = self._clock() - waited_from
            if waited_s > self._stall_timeout_s + SUSPEND_GAP_S:
                # The timer was overdue by far: the whole process was not running.
                self._lost_reason = (
                    f"no audio for {waited_s:.0f} s (the machine was suspended or the "
                    "daemon stopped); reopening"
                )
            else:
                self._lost_reason = f"no audio for {self._stall_timeout_s:g} s"
        return bridge.drain()

    async def _open(self, *, refresh: bool) -> OpenedStream:
        loop = asyncio.get_running_loop()
        self._generation += 1
        generation = self._generation
        event = self._event

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
                loop.call_soon_threadsafe(event.set)

        def finished() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._mark_lost, generation)

        bridge = BlockBridge(self._max_blocks, wake)
        opening = asyncio.ensure_future(
            asyncio.to_thread(self._opener.open, bridge.push, finished, refresh=refresh)
        )
        # Live before the stream starts: it may stop before open() even returns.
        self._live_generation = generation
        self._lost_reason = None
        self._switch_reason = None
        try:
            stream = await asyncio.shield(opening)
        except asyncio.CancelledError:
            self._live_generation = None
            opening.add_done_callback(_close_if_opened)
            raise
        except BaseException:
            self._live_generation = None
            raise
        if self._bridge is not None:
            self._dropped_before += self._bridge.overflow_count
            self._device_overflows_before += self._bridge.device_overflow_count
        self._bridge = bridge
        self._stream_target = stream.target
        return stream

    async def _follow_default(self, interval_s: float) -> None:
        """Ask the opener for its target every `interval_s`; a new one marks a switch."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                target = await asyncio.to_thread(self._opener.current_target)
            except CaptureError as exc:  # the sound server is restarting, say: keep trying
                log.debug("asking for the default of %s: %s", self._opener.description, exc)
                continue
            opened = self._stream_target
            if (
                target is None
                or opened is None
                or target == opened
                or self._live_generation is None  # closed or reopening: it opens the new one
                or self._lost_reason is not None
                or self._switch_reason is not None
            ):
                continue
            self._switch_reason = f"the default output changed from {opened!r} to {target!r}"
            self._event.set()

    def _mark_lost(self, generation: int) -> None:
        if generation == self._live_generation and self._lost_reason is None:
            self._lost_reason = "the audio stream stopped (device removed or sound server gone)"
            self._event.set()

    async def _close(self, stream: OpenedStream) -> None:
        self._live_generation = None  # our own stop must not read as a lost device
        try:
            await asyncio.to_thread(stream.close)
        except CaptureError as exc:
            log.warning("closing %s: %s", stream.description, exc)

    async def _reopen(self) -> OpenedStream:
        attempt = 0
        while True:
            delay_s = self._retry.delay_s(attempt)
            await asyncio.sleep(delay_s)
            try:
                return await self._open(refresh=True)
            except CaptureError as exc:
                attempt += 1
                log.info(
                    "reopening %s failed (attempt %d): %s; next try in %.1f s",
                    self._opener.description,
                    attempt,
                    exc,
                    self._retry.delay_s(attempt),
                )

    def _check_overflow(self) -> None:
        total = self.overflow_count
        if total == self._reported_overflows:
            return
        if not self._overflow_log.allow(self._clock()):
            return
        self._reported_overflows = total
        log.warning(
            "capture overflow: %d blocks dropped because the pipeline fell behind, "
            "%d overruns reported by the device (%s)",
            self._dropped_blocks,
            self._device_overflows,
            self._opener.description,
        )
        self._status("running", "capture buffer overflow: audio was dropped")

    def _status(self, state: CaptureState, detail: str) -> None:
        if self._on_status is not None:
            self._on_status(
                StatusUpdate(capture=state, detail=detail, overflow_count=self.overflow_count)
            )


def _close_if_opened(opening: asyncio.Future[OpenedStream]) -> None:
    """Close a stream whose opening finished after its caller was cancelled."""
    if opening.cancelled() or opening.exception() is not None:
        return
    with contextlib.suppress(CaptureError):
        opening.result().close()


class PortAudioOpener:
    """Opens `spec` (a device, or a monitor through the ALSA `pulse` device) with PortAudio.

    The stream runs at the device's native rate with at most two channels (mono and stereo
    cover speech; the assembler downmixes and resamples). A monitor is recorded at its
    source's own rate and channels, so PulseAudio does not resample twice.
    """

    def __init__(self, spec: SourceSpec) -> None:
        if spec.kind not in ("device", "monitor"):
            raise InvalidArgument(f"PortAudioOpener opens devices and monitors, not {spec.kind}")
        self.spec = spec

    @property
    def description(self) -> str:
        if self.spec.kind == "monitor":
            sink = "the default sink" if self.spec.sink is None else repr(self.spec.sink)
            return f"monitor of {sink}"
        return f"input device {self.spec.device!r}"

    def current_target(self) -> str | None:
        """The default sink's name for `monitor`; None for a named sink or a device."""
        if self.spec.kind == "monitor" and self.spec.sink is None:
            return pulse.default_sink()
        return None

    def open(
        self, on_block: BlockCallback, on_finished: Callable[[], None], *, refresh: bool
    ) -> OpenedStream:
        sd = portaudio.load_sounddevice()
        if refresh:
            portaudio.refresh_devices(sd)
        pulse_source: str | None = None
        target: str | None = None
        if self.spec.kind == "monitor":
            monitor = pulse.find_monitor(self.spec.sink)
            device = portaudio.find_pulse_device(sd)
            rate_hz = float(monitor.sample_rate_hz)
            channels = min(monitor.channels, device.channels, 2)
            pulse_source = monitor.name
            target = monitor.sink_name if self.spec.sink is None else None
            description = f"monitor {monitor.name} via PortAudio device [{device.index}] pulse"
        else:
            device = portaudio.find_input(sd, self.spec.device)
            rate_hz = device.default_sample_rate_hz
            channels = min(device.channels, 2)
            description = f"[{device.index}] {device.name} ({device.host_api})"

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            # The audio thread: copy the block out of PortAudio's buffer and hand it over.
            on_block(indata.copy(), bool(status.input_overflow))

        with _pulse_source(pulse_source):
            try:
                stream = sd.InputStream(
                    device=device.index,
                    samplerate=rate_hz,
                    channels=channels,
                    dtype="float32",
                    blocksize=max(1, round(rate_hz * CALLBACK_BLOCK_S)),
                    callback=callback,
                    finished_callback=on_finished,
                )
            except Exception as exc:  # sounddevice.PortAudioError, ValueError for bad params
                raise CaptureError(f"cannot open {description}: {exc}") from exc
            try:
                stream.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    stream.close()
                raise CaptureError(f"cannot start {description}: {exc}") from exc
        log.info("capturing from %s at %g Hz, %d channel(s)", description, rate_hz, channels)
        return _PortAudioStream(stream, rate_hz, description, target)


@dataclass(frozen=True)
class _PortAudioStream:
    stream: Any  # sounddevice.InputStream
    sample_rate_hz: float
    description: str
    target: str | None

    def close(self) -> None:
        try:
            self.stream.stop()
        except Exception as exc:  # a lost stream may refuse to stop; closing still frees it
            log.debug("stopping %s: %s", self.description, exc)
        try:
            self.stream.close()
        except Exception as exc:
            raise CaptureError(f"closing {self.description}: {exc}") from exc


@contextlib.contextmanager
def _pulse_source(name: str | None) -> Iterator[None]:
    """Set `PULSE_SOURCE` while the stream opens: libpulse reads it when the ALSA `pulse`
    plugin creates its context (at open), so it is restored right after. Not safe against
    two monitors being opened at the same moment from two threads; subtitled opens one.
    """
    if name is None:
        yield
        return
    previous = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = name
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PULSE_SOURCE", None)
        else:
            os.environ["PULSE_SOURCE"] = previous
