"""The pipeline shell: capture -> asr -> publish on one asyncio loop.

Capture and the ASR are joined by a bounded audio `Channel` whose overflow policy
depends on the source: a live source (device, monitor) never waits, so when the ASR
falls behind the oldest queued audio is dropped and counted (`drop-oldest`; the ASR
sees the jump in audio time as a gap and closes the segment); a file or stdin source
is simply paused (`back-pressure`), since nothing is lost by reading it later.

The model runs on its own worker thread (`subtitled.workers`), never on the loop. Every
segment revision goes to each sink in `sinks`, on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from subtitled.asr.stream import StreamingAsr
from subtitled.channel import Channel
from subtitled.events import AudioChunk, SegmentUpdate, StatusUpdate
from subtitled.workers import model_thread

log = logging.getLogger(__name__)

SegmentSink = Callable[[SegmentUpdate], None]
StatusSink = Callable[[StatusUpdate], None]


@dataclass(frozen=True)
class QueuePolicy:
    """Bounded audio queue between capture and ASR."""

    max_chunks: int = 300
    """At 0.1 s blocks: 30 s of audio."""
    live: bool = True
    """Live sources never block capture: the oldest audio is dropped when the queue is
    full, and a backlog is transcribed in one step to catch up. Otherwise (files,
    stdin) capture waits, and the ASR steps every `step_s` of audio however fast the
    audio arrives, so a file gives the same result at any speed."""


@dataclass
class PipelineStats:
    """Counters the daemon reports in /metrics and at exit."""

    audio_s: float = 0.0
    dropped_chunks: int = 0
    asr_compute_s: float = 0.0
    segments_final: int = 0
    asr_failures: int = 0


class Recogniser:
    """The ASR stage's step rule, shared by the daemon and `subtitled bench`.

    `feed` accepts a batch of chunks and transcribes when a step is due. With
    `step_every_due` (files, stdin, simulated clocks) a step runs after every
    `step_s` of audio, however much arrives at once, so results do not depend on
    the speed of the source; without it (live audio) a backlog is transcribed in
    one step, so the ASR catches up with real time instead of falling further behind.
    """

    def __init__(self, asr: StreamingAsr, *, step_every_due: bool) -> None:
        self.asr = asr
        self.step_every_due = step_every_due

    def feed(
        self, chunks: Sequence[AudioChunk], ended: bool, now: Callable[[], float]
    ) -> list[SegmentUpdate]:
        updates: list[SegmentUpdate] = []
        for chunk in chunks:
            updates += self.asr.accept(chunk, now())
            if self.step_every_due and self.asr.due():
                updates += self.asr.step(now())
        if ended:
            updates += self.asr.finish(now())
        elif self.asr.due():
            updates += self.asr.step(now())
        return [self._with_languages(u) for u in updates]

    def _with_languages(self, update: SegmentUpdate) -> SegmentUpdate:
        """The update with the languages the transcriber worked in for it."""
        transcriber = self.asr.transcriber
        text, spoken = transcriber.text_language, transcriber.spoken_language
        return dataclasses.replace(
            update, language=text, spoken_language=spoken if spoken != text else None
        )


class AsrCore:
    """The ASR stage's core, synchronous (it runs on the model thread): the step rule
    (`Recogniser`), a fresh ASR state on the same model after a failed call, and segment
    ids unique across such restarts (a fresh state numbers from 0 again; ids go on from
    the next unused one). Testable with no event loop: feed it, make it fail, read ids."""

    def __init__(
        self,
        asr: StreamingAsr,
        *,
        step_every_due: bool,
        first_segment_id: int = 0,
        stats: PipelineStats | None = None,
    ) -> None:
        self.recogniser = Recogniser(asr, step_every_due=step_every_due)
        self._id_offset = first_segment_id
        self.next_segment_id = first_segment_id
        self.stats = stats if stats is not None else PipelineStats()
        """Counts `audio_s` and `asr_failures` (the pipeline's own, when it runs this)."""

    @property
    def asr(self) -> StreamingAsr:
        return self.recogniser.asr

    @property
    def audio_s(self) -> float:
        return self.stats.audio_s

    @property
    def failures(self) -> int:
        return self.stats.asr_failures

    def feed(
        self, chunks: Sequence[AudioChunk], ended: bool, now: Callable[[], float]
    ) -> list[SegmentUpdate]:
        """Feed audio, transcribe when due (or at the end); survive a failed model call.

        A crashed call must not take captions down: it is logged, a fresh ASR state is
        started on the same model, and the next audio goes to it (the audio of the
        failed step is lost, nothing else). Live audio is fed as one batch (one step
        catches up with a backlog); other sources chunk by chunk, so a failure loses only
        the audio before it.
        """
        updates: list[SegmentUpdate] = []
        groups = [[c] for c in chunks] if self.recogniser.step_every_due else [list(chunks)]
        for i, group in enumerate(groups or [[]]):
            last = i == len(groups) - 1 or not groups
            self.stats.audio_s += sum(c.duration_s for c in group)
            try:
                produced = self.recogniser.feed(group, ended and last, now)
            except Exception:
                self.stats.asr_failures += 1
                log.exception("the ASR worker failed; restarting it (failure %d)", self.failures)
                self._restart()
                continue
            updates += [self._renumber(u) for u in produced]
        return updates

    def _restart(self) -> None:
        asr = self.recogniser.asr
        fresh = StreamingAsr(asr.transcriber, asr.config)
        self.recogniser = Recogniser(fresh, step_every_due=self.recogniser.step_every_due)
        self._id_offset = self.next_segment_id

    def _renumber(self, update: SegmentUpdate) -> SegmentUpdate:
        segment_id = self._id_offset + update.segment_id
        self.next_segment_id = max(self.next_segment_id, segment_id + 1)
        if segment_id == update.segment_id:
            return update
        return dataclasses.replace(update, segment_id=segment_id)


class Pipeline:
    """Runs one audio source through the streaming ASR into the sinks."""

    def __init__(
        self,
        asr: StreamingAsr,
        chunks: AsyncIterator[AudioChunk],
        sinks: Sequence[SegmentSink],
        *,
        queue: QueuePolicy | None = None,
        first_segment_id: int = 0,
    ) -> None:
        self._policy = queue or QueuePolicy()
        self.stats = PipelineStats()
        self.core = AsrCore(
            asr, step_every_due=not self._policy.live, first_segment_id=first_segment_id,
            stats=self.stats,
        )
        self._chunks = chunks
        self._sinks = list(sinks)
        self._audio: Channel[AudioChunk] = Channel(
            self._policy.max_chunks,
            "drop-oldest" if self._policy.live else "back-pressure",
            on_drop=self._dropped,
        )

    @property
    def asr(self) -> StreamingAsr:
        return self.core.asr

    @property
    def recogniser(self) -> Recogniser:
        return self.core.recogniser

    @recogniser.setter
    def recogniser(self, recogniser: Recogniser) -> None:
        self.core.recogniser = recogniser

    @property
    def next_segment_id(self) -> int:
        """The first segment id the next run may use (ids are unique for the daemon's life)."""
        return self.core.next_segment_id

    async def run(self, stop: asyncio.Event | None = None) -> PipelineStats:
        """Run until the source ends or `stop` is set; then finalise open segments."""
        stop = stop or asyncio.Event()
        capture = asyncio.create_task(self._capture(), name="capture")
        asr = asyncio.create_task(self._recognise(), name="asr")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({asr, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                # Stop capturing, let the ASR drain what was captured, then finalise.
                capture.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await capture
            await asr
            if capture.done() and not capture.cancelled() and capture.exception() is not None:
                raise capture.exception()  # type: ignore[misc]
        finally:
            for task in (capture, stopper, asr):
                task.cancel()
            for task in (capture, stopper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.stats

    def _dropped(self, count: int) -> None:
        self.stats.dropped_chunks = count
        if count in (1, 10, 100) or not count % 1000:
            log.warning("ASR is behind real time: %d audio blocks dropped so far", count)

    async def _capture(self) -> None:
        try:
            async for chunk in self._chunks:
                await self._audio.put(chunk)
        finally:
            # Whatever ended capture (the source ended, failed, or was cancelled),
            # the ASR finishes what it has and finalises the open segment.
            self._audio.close()
            with contextlib.suppress(RuntimeError):
                closer = getattr(self._chunks, "aclose", None)
                if closer is not None:
                    await closer()

    async def _recognise(self) -> None:
        ended = False
        while not ended:
            chunks, ended = await self._audio.take()
            updates = await model_thread("asr").call(self._work, chunks, ended)
            for update in updates:
                self._emit(update)

    def _work(self, chunks: list[AudioChunk], ended: bool) -> list[SegmentUpdate]:
        """Worker thread: the core's feed, timed."""
        started = time.perf_counter()
        updates = self.core.feed(chunks, ended, time.time)
        self.stats.asr_compute_s += time.perf_counter() - started
        return updates

    def _emit(self, update: SegmentUpdate) -> None:
        if update.status == "final":
            self.stats.segments_final += 1
        for sink in self._sinks:
            try:
                sink(update)
            except Exception:
                # One broken sink (a full disk for a subtitle file) must not stop captions.
                log.exception("a subtitle sink failed on segment %d", update.segment_id)
