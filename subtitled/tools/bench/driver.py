"""Runs manifest audio through the daemon's own ASR stage and records what it emitted.

Two clocks, one pipeline:

- `simulated`: the audio is cut into capture blocks (`capture.block_s`); block
  [t, t + block_s) becomes available when the clock reaches t + block_s. Whatever is
  available goes to the daemon's step rule (`pipeline.Recogniser`, with a step after
  every `streaming.step_s` of audio, as for files); the call's measured wall time is
  charged to the clock, so a slow step delays everything after it, exactly as a real
  worker thread would. When the ASR is idle and no block is available, the clock jumps
  to the next block's end. Revisions are stamped with the clock when the call returns
  (when the daemon would hand them to the publish stage). Latency is therefore honest
  without waiting in real time.
- `real`: the audio is played at 1x through `pipeline.Pipeline` (the daemon's asyncio
  shell, with the back-pressure queue the daemon uses for file sources), and revisions
  are stamped with the wall time at which the pipeline's sink receives them.

Both clocks start at 0 at the start of the audio, so clock time minus a word's audio
time is its latency. Models are loaded once; each stream gets a fresh `StreamingAsr`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.stream import StreamingAsr
from subtitled.asr.whisper import Transcriber, WhisperConfig, WhisperTranscriber
from subtitled.config import Config
from subtitled.errors import ModelError
from subtitled.events import AudioChunk, SegmentUpdate, Word
from subtitled.pipeline import Pipeline, QueuePolicy, Recogniser
from subtitled.tools.bench.manifest import ManifestItem
from subtitled.tools.bench.metrics import Emission

log = logging.getLogger(__name__)

Clock = Literal["simulated", "real"]
FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")

GAP_S = 0.3
"""Silence between items in a `--long-form` stream."""
OFFLINE_BEAM_SIZE = 5
"""Beam of the whole-clip baseline (faster-whisper's default)."""
_EPS_S = 1e-9


@dataclass(frozen=True)
class StreamPlan:
    """One continuous audio stream: a single item, or all of them (`--long-form`)."""

    items: tuple[int, ...]
    """Indices into the benchmark's item list, in stream order."""
    item_starts_s: tuple[float, ...]
    """Stream time at which each item's audio begins."""
    item_durations_s: tuple[float, ...]
    """Decoded duration of each item's audio."""
    audio: FloatArray
    timeline_offset_s: float
    """Where the stream starts on the benchmark's overall timeline (for plots)."""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE_HZ


@dataclass(frozen=True)
class LagSample:
    """After one ASR call: clock time, and how far behind the audio the ASR is."""

    clock_s: float
    lag_s: float
    """Clock time minus the stream time of the newest audio the call consumed."""


@dataclass(frozen=True)
class StreamRun:
    """What the pipeline emitted for one stream, and what it cost."""

    plan: StreamPlan
    emissions: tuple[Emission, ...]
    compute_s: float
    """Wall time spent inside the ASR stage."""
    cpu_s: float
    """Process CPU time over the stream (all threads)."""
    lags: tuple[LagSample, ...]


@dataclass(frozen=True)
class Progress:
    """Reported while streams run, for the command line's progress line."""

    stream: int
    streams: int
    audio_s: float
    """Audio consumed so far in the current stream."""
    stream_audio_s: float
    clock_s: float
    compute_s: float


ProgressSink = Callable[[Progress], None]


def plan_streams(
    items: Sequence[ManifestItem], audios: Iterable[FloatArray], *, long_form: bool
) -> list[StreamPlan]:
    """One stream per item, or (`long_form`) one stream of all items with `GAP_S` gaps.

    `audios` (one array per item) may be a generator that decodes lazily: a long-form
    stream is filled item by item, so only one copy of the audio is ever in memory
    (peak RSS is part of the report).
    """
    if not long_form:
        plans: list[StreamPlan] = []
        offset_s = 0.0
        for i, audio in enumerate(audios):
            duration_s = len(audio) / SAMPLE_RATE_HZ
            plans.append(StreamPlan((i,), (0.0,), (duration_s,), audio, offset_s))
            offset_s += duration_s
        return plans
    gap = round(GAP_S * SAMPLE_RATE_HZ)
    # Sized from the manifest's durations; np.zeros pages cost nothing until written.
    expected_s = sum(i.duration_s + GAP_S + 1.0 for i in items)
    buffer = np.zeros(round(expected_s * SAMPLE_RATE_HZ), dtype=np.float32)
    starts: list[float] = []
    durations: list[float] = []
    n = 0
    for i, audio in enumerate(audios):
        n += gap if i else 0
        if n + len(audio) > len(buffer):  # the manifest understated a duration
            grow = max(n + len(audio) - len(buffer), len(buffer) // 2)
            buffer = np.concatenate([buffer, np.zeros(grow, dtype=np.float32)])
        buffer[n : n + len(audio)] = audio
        starts.append(n / SAMPLE_RATE_HZ)
        durations.append(len(audio) / SAMPLE_RATE_HZ)
        n += len(audio)
    return [StreamPlan(tuple(range(len(starts))), tuple(starts), tuple(durations), buffer[:n], 0.0)]


def chunks_of(audio: FloatArray, block_s: float) -> list[AudioChunk]:
    """Capture blocks of `block_s` with their stream times; the last may be shorter."""
    block = max(1, round(block_s * SAMPLE_RATE_HZ))
    return [
        AudioChunk(audio[i : i + block], i / SAMPLE_RATE_HZ) for i in range(0, len(audio), block)
    ]


class SimulatedClock:
    """Benchmark time: advanced by the measured wall time of the work done under `charge`.

    Called as a function it returns the current time, including the part of a running
    `charge` already spent, so `now` inside a step is as late as it would really be.
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.now_s = 0.0
        self._timer = timer
        self._charging_since: float | None = None

    def __call__(self) -> float:
        if self._charging_since is None:
            return self.now_s
        return self.now_s + self._timer() - self._charging_since

    def advance_to(self, t_s: float) -> None:
        """Idle until `t_s` (no effect if the clock is already past it)."""
        self.now_s = max(self.now_s, t_s)

    def charge(self, work: Callable[[], T]) -> tuple[T, float]:
        """Run `work`, add its wall time to the clock; return its result and that time."""
        self._charging_since = self._timer()
        try:
            result = work()
        finally:
            spent_s = self._timer() - self._charging_since
            self._charging_since = None
            self.now_s += spent_s
        return result, spent_s


def run_simulated(
    asr: StreamingAsr,
    plan: StreamPlan,
    block_s: float,
    progress: Callable[[float, float, float], None] | None = None,
    clock: SimulatedClock | None = None,
) -> StreamRun:
    """Feed `plan`'s audio through the daemon's step rule on a `SimulatedClock`.

    `progress(audio_s, clock_s, compute_s)` is called now and then. `clock` is for
    tests (a clock with a scripted timer); by default the wall time of each call counts.
    """
    recogniser = Recogniser(asr, step_every_due=True)
    chunks = chunks_of(plan.audio, block_s)
    clock = clock if clock is not None else SimulatedClock()
    emissions: list[Emission] = []
    lags: list[LagSample] = []
    compute_s = 0.0
    cpu_start_s = time.process_time()
    next_report_s = 0.0
    done = 0
    while done < len(chunks):
        available = done
        while available < len(chunks) and chunks[available].end_s <= clock() + _EPS_S:
            available += 1
        if available == done:
            clock.advance_to(chunks[done].end_s)
            continue
        batch = chunks[done:available]
        ended = available == len(chunks)

        def feed(batch: Sequence[AudioChunk] = batch, ended: bool = ended) -> list[SegmentUpdate]:
            return recogniser.feed(batch, ended, clock)

        updates, spent_s = clock.charge(feed)
        compute_s += spent_s
        emissions += [Emission(clock.now_s, u) for u in updates]
        lags.append(LagSample(clock.now_s, clock.now_s - batch[-1].end_s))
        done = available
        if progress is not None and (batch[-1].end_s >= next_report_s or ended):
            progress(batch[-1].end_s, clock.now_s, compute_s)
            next_report_s = batch[-1].end_s + 5.0
    if not chunks:  # an empty stream still ends: finalise nothing, cheaply
        emissions += [Emission(0.0, u) for u in recogniser.feed([], True, clock)]
    return StreamRun(
        plan, tuple(emissions), compute_s, time.process_time() - cpu_start_s, tuple(lags)
    )


class _MeteredRecogniser(Recogniser):
    """The daemon's step rule, also noting how far behind real time each call finished."""

    def __init__(
        self, asr: StreamingAsr, step_every_due: bool, clock: Callable[[], float]
    ) -> None:
        super().__init__(asr, step_every_due=step_every_due)
        self.clock = clock
        self.lags: list[LagSample] = []

    def feed(
        self, chunks: Sequence[AudioChunk], ended: bool, now: Callable[[], float]
    ) -> list[SegmentUpdate]:
        updates = super().feed(chunks, ended, now)
        clock_s = self.clock()
        self.lags.append(LagSample(clock_s, clock_s - self.asr.audio_end_s))
        return updates


def run_real(
    asr: StreamingAsr,
    plan: StreamPlan,
    block_s: float,
    progress: Callable[[float, float, float], None] | None = None,
) -> StreamRun:
    """Play `plan`'s audio at 1x through the daemon's `Pipeline`; stamp with wall time."""
    return asyncio.run(_run_real(asr, plan, block_s, progress))


async def _run_real(
    asr: StreamingAsr,
    plan: StreamPlan,
    block_s: float,
    progress: Callable[[float, float, float], None] | None,
) -> StreamRun:
    chunks = chunks_of(plan.audio, block_s)
    emissions: list[Emission] = []

    def clock() -> float:
        return time.monotonic() - start_s

    async def source() -> AsyncIterator[AudioChunk]:
        next_report_s = 0.0
        for chunk in chunks:
            # Absolute deadlines: block [t, t + block_s) is captured at t + block_s.
            delay_s = chunk.end_s - clock()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            yield chunk
            if progress is not None and chunk.end_s >= next_report_s:
                progress(chunk.end_s, clock(), pipeline.stats.asr_compute_s)
                next_report_s = chunk.end_s + 5.0

    def sink(update: SegmentUpdate) -> None:
        emissions.append(Emission(clock(), update))

    # A file source in the daemon: back-pressure, a step every `step_s` of audio.
    pipeline = Pipeline(asr, source(), [sink], queue=QueuePolicy(live=False))
    metered = _MeteredRecogniser(asr, pipeline.recogniser.step_every_due, clock)
    pipeline.recogniser = metered
    cpu_start_s = time.process_time()
    start_s = time.monotonic()  # the source's first block is due block_s from now
    stats = await pipeline.run()
    return StreamRun(
        plan,
        tuple(emissions),
        stats.asr_compute_s,
        time.process_time() - cpu_start_s,
        tuple(metered.lags),
    )


def run_streams(
    plans: Sequence[StreamPlan],
    transcriber: Transcriber,
    config: Config,
    clock: Clock,
    on_progress: ProgressSink | None = None,
) -> list[StreamRun]:
    """Every stream through a fresh `StreamingAsr` sharing one loaded model."""
    runs: list[StreamRun] = []
    run = run_simulated if clock == "simulated" else run_real
    for n, plan in enumerate(plans):
        if isinstance(transcriber, WhisperTranscriber):
            transcriber.reset_language()  # a new stream: its language is identified anew
        asr = StreamingAsr(transcriber, config.streaming)

        def progress(
            audio_s: float, clock_s: float, compute_s: float, n: int = n, plan: StreamPlan = plan
        ) -> None:
            if on_progress is not None:
                on_progress(
                    Progress(n, len(plans), audio_s, plan.duration_s, clock_s, compute_s)
                )

        runs.append(run(asr, plan, config.capture.block_s, progress))
        log.debug("stream %d/%d: %d revisions", n + 1, len(plans), len(runs[-1].emissions))
    return runs


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_path(config: WhisperConfig) -> Path:
    """The directory of the configured ASR model ('tiny.en' is the bundled one)."""
    from subtitled.asr.whisper import default_model_path

    if config.model == "tiny.en":
        return default_model_path()
    from subtitled.asr.packaged import PACKAGED_MODELS, packaged_model_path

    if config.model in PACKAGED_MODELS:
        return packaged_model_path(config.model)
    path = Path(config.model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelError(f"ASR model {config.model!r}: no CTranslate2 model.bin in {path}")
    return path


def offline_words(plans: Sequence[StreamPlan], config: WhisperConfig) -> list[tuple[Word, ...]]:
    """Whole-clip baseline: faster-whisper's `transcribe` (beam 5) on each stream's audio.

    Same model, compute type and threads as the streaming run; word timestamps only
    to map words to items in a long-form stream (they do not change the text).
    """
    from faster_whisper import WhisperModel

    path = model_path(config)
    try:
        model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=config.compute_type,
            cpu_threads=config.threads,
            local_files_only=True,
        )
    except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError/OSError
        raise ModelError(f"cannot load the ASR model at {path}: {exc}") from exc
    results: list[tuple[Word, ...]] = []
    for plan in plans:
        segments, _info = model.transcribe(
            plan.audio,
            language=None if config.language == "auto" else config.language,
            task=config.task,
            beam_size=OFFLINE_BEAM_SIZE,
            word_timestamps=True,
        )
        words = [
            Word(str(w.word), float(w.start), float(w.end), float(w.probability))
            for segment in segments
            for w in (segment.words or [])
        ]
        results.append(tuple(words))
    return results
