"""The drivers' clocks, with a scripted ASR whose compute time is known exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.events import AudioChunk, SegmentUpdate, Word
from subtitled.tools.bench.driver import (
    GAP_S,
    SimulatedClock,
    StreamPlan,
    chunks_of,
    plan_streams,
    run_real,
    run_simulated,
)
from subtitled.tools.bench.manifest import ManifestItem


class Timer:
    """A fake perf_counter that only moves when the scripted ASR 'computes'."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class ScriptedAsr:
    """Duck-typed `StreamingAsr`: a step every 0.5 s of audio costs `step_cost_s`."""

    def __init__(self, timer: Timer | None, step_cost_s: float, step_s: float = 0.5) -> None:
        self.timer = timer
        self.step_cost_s = step_cost_s
        self.step_s = step_s
        self.audio_end_s = 0.0
        self.last_step_s = 0.0
        self.accepted: list[tuple[float, float]] = []  # (chunk end, now at accept)
        self.steps: list[float] = []
        self.revision = 0
        # The languages `Recogniser` stamps on each update (English speech, English text).
        self.transcriber = SimpleNamespace(text_language="en", spoken_language="en")

    def accept(self, chunk: AudioChunk, now: float) -> list[SegmentUpdate]:
        self.accepted.append((chunk.end_s, now))
        self.audio_end_s = chunk.end_s
        return []

    def due(self) -> bool:
        return self.audio_end_s - self.last_step_s >= self.step_s - 1e-9

    def step(self, now: float) -> list[SegmentUpdate]:
        self.last_step_s = self.audio_end_s
        self.steps.append(self.audio_end_s)
        if self.timer is not None:
            self.timer.t += self.step_cost_s
        return [self._update("partial", now)]

    def finish(self, now: float) -> list[SegmentUpdate]:
        return [self._update("final", now)]

    def _update(self, status: str, now: float) -> SegmentUpdate:
        self.revision += 1
        word = Word(" w", max(self.audio_end_s - 0.2, 0.0), self.audio_end_s)
        committed = (word,) if status == "final" else ()
        partial = () if status == "final" else (word,)
        return SegmentUpdate(0, self.revision, status, committed, partial, now)  # type: ignore[arg-type]


def plan_of(seconds: float) -> StreamPlan:
    audio = np.zeros(round(seconds * SAMPLE_RATE_HZ), dtype=np.float32)
    return StreamPlan((0,), (0.0,), (seconds,), audio, 0.0)


def test_fast_steps_are_charged_to_the_clock() -> None:
    timer = Timer()
    asr = ScriptedAsr(timer, step_cost_s=0.25)
    run = run_simulated(asr, plan_of(2.0), 0.1, clock=SimulatedClock(timer))  # type: ignore[arg-type]
    assert asr.steps == pytest.approx([0.5, 1.0, 1.5, 2.0])
    # Each step starts when its last block has arrived and ends 0.25 s later; the last
    # block also ends the stream, so the final revision comes with the last step.
    times = [e.time_s for e in run.emissions]
    assert times == pytest.approx([0.75, 1.25, 1.75, 2.25, 2.25])
    assert run.emissions[-1].update.status == "final"
    assert run.compute_s == pytest.approx(1.0)
    assert max(s.lag_s for s in run.lags) == pytest.approx(0.25)
    # No block is seen before it exists.
    assert all(now >= end - 1e-9 for end, now in asr.accepted)


def test_slow_steps_queue_audio_and_fall_behind() -> None:
    timer = Timer()
    asr = ScriptedAsr(timer, step_cost_s=0.7)  # slower than real time: 0.7 s per 0.5 s
    run = run_simulated(asr, plan_of(3.0), 0.1, clock=SimulatedClock(timer))  # type: ignore[arg-type]
    times = [e.time_s for e in run.emissions]
    # step at 0.5 ends 1.2; blocks up to 1.2 are then fed at once: a step after the
    # block ending 1.0, done at 1.9; then blocks to 1.9, a step at 1.5, done 2.6;
    # then blocks to 2.6 with two steps due (2.0, 2.5): both delivered at 4.0.
    assert times[:5] == pytest.approx([1.2, 1.9, 2.6, 4.0, 4.0])
    step_lags = [s.lag_s for s in run.lags if s.lag_s > 0]
    assert step_lags[:4] == pytest.approx([0.7, 0.7, 0.7, 1.4])
    assert all(now >= end - 1e-9 for end, now in asr.accepted)


def test_idle_clock_jumps_to_the_next_block() -> None:
    timer = Timer()
    asr = ScriptedAsr(timer, step_cost_s=0.0)
    run = run_simulated(asr, plan_of(1.0), 0.1, clock=SimulatedClock(timer))  # type: ignore[arg-type]
    # With free compute every block is fed at the moment it ends.
    assert [now for _, now in asr.accepted] == pytest.approx([end for end, _ in asr.accepted])
    assert [e.time_s for e in run.emissions] == pytest.approx([0.5, 1.0, 1.0])


def test_simulated_clock_now_includes_work_in_progress() -> None:
    timer = Timer()
    clock = SimulatedClock(timer)
    clock.advance_to(2.0)
    clock.advance_to(1.0)  # never backwards
    seen: list[float] = []

    def work() -> str:
        timer.t += 0.3
        seen.append(clock())
        timer.t += 0.2
        return "done"

    assert clock.charge(work) == ("done", pytest.approx(0.5))
    assert seen == pytest.approx([2.3])
    assert clock() == pytest.approx(2.5)


def test_real_clock_runs_the_pipeline_at_1x() -> None:
    asr = ScriptedAsr(None, step_cost_s=0.0)
    run = run_real(asr, plan_of(0.6), 0.1)  # type: ignore[arg-type]
    assert asr.steps[0] == pytest.approx(0.5)
    assert run.emissions[-1].update.status == "final"
    # A revision cannot come before the audio it covers has been played.
    for emission in run.emissions:
        assert emission.time_s >= emission.update.words[-1].end_s - 0.01
    assert run.emissions[-1].time_s >= 0.6 - 0.01
    assert run.lags and all(s.lag_s > -0.05 for s in run.lags)


def item(name: str, seconds: float) -> ManifestItem:
    from pathlib import Path

    return ManifestItem(Path("/" + name), name, seconds, "x")


def test_plan_streams() -> None:
    items = [item("a", 1.0), item("b", 0.5)]
    audios = [np.ones(16000, np.float32), np.ones(8000, np.float32)]
    single = plan_streams(items, audios, long_form=False)
    assert [p.items for p in single] == [(0,), (1,)]
    assert [p.timeline_offset_s for p in single] == [0.0, 1.0]
    (joined,) = plan_streams(items, audios, long_form=True)
    assert joined.items == (0, 1)
    assert joined.item_starts_s == pytest.approx((0.0, 1.0 + GAP_S))
    assert joined.duration_s == pytest.approx(1.5 + GAP_S)
    gap = joined.audio[16000 : 16000 + round(GAP_S * SAMPLE_RATE_HZ)]
    assert not gap.any()


def test_chunks_of() -> None:
    chunks = chunks_of(np.zeros(3500, np.float32), 0.1)
    assert [len(c.samples) for c in chunks] == [1600, 1600, 300]
    assert [c.start_s for c in chunks] == pytest.approx([0.0, 0.1, 0.2])


def test_long_form_plan_from_a_generator_with_understated_durations() -> None:
    items = [item("a", 0.1), item("b", 0.1), item("c", 0.1)]  # all really 1 s long
    audios = (np.full(16000, k + 1, np.float32) for k in range(3))
    (plan,) = plan_streams(items, audios, long_form=True)
    assert plan.item_durations_s == pytest.approx((1.0, 1.0, 1.0))
    assert plan.item_starts_s == pytest.approx((0.0, 1.0 + GAP_S, 2 * (1.0 + GAP_S)))
    assert plan.duration_s == pytest.approx(3.0 + 2 * GAP_S)
    for k, start_s in enumerate(plan.item_starts_s):
        first = round(start_s * SAMPLE_RATE_HZ)
        assert (plan.audio[first : first + 16000] == k + 1).all()
