"""The pipeline: the ASR core survives a failure and keeps ids unique (no event loop);
the shell does it end to end, and live overflow drops the oldest audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from speech import clips, wer

from subtitled.asr.stream import StreamingAsr
from subtitled.asr.whisper import Hypothesis, WhisperTranscriber
from subtitled.capture import decode_file
from subtitled.events import AudioChunk, SegmentUpdate, Word
from subtitled.pipeline import AsrCore, Pipeline, QueuePolicy

pytestmark = pytest.mark.slow


class FailsOnce:
    """The real model, except that one call raises (a crashed worker)."""

    def __init__(self, model: WhisperTranscriber, fail_on_call: int) -> None:
        self.model = model
        self.name = model.name
        self.spoken_language = model.spoken_language
        self.text_language = model.text_language
        self.calls = 0
        self.fail_on_call = fail_on_call

    def transcribe(self, audio: npt.NDArray[np.float32], offset_s: float,
                   prefix: Sequence[Word] = (), context: str = "") -> Hypothesis:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated CTranslate2 failure")
        return self.model.transcribe(audio, offset_s, prefix, context)


async def chunks_of(
    samples: npt.NDArray[np.float32], block: int = 1600
) -> AsyncIterator[AudioChunk]:
    for start in range(0, len(samples), block):
        yield AudioChunk(samples[start : start + block], start / 16_000)
        await asyncio.sleep(0)


def run(pipeline: Pipeline) -> list[SegmentUpdate]:
    out: list[SegmentUpdate] = []
    pipeline._sinks.append(out.append)
    asyncio.run(pipeline.run())
    return out


def test_asr_failure_is_logged_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    by_name = {c.path.name: c for c in clips()}
    first, second = by_name["LJ001-0001.flac"], by_name["LJ001-0002.flac"]
    gap = np.zeros(16_000, dtype=np.float32)
    audio = np.concatenate([decode_file(first.path), gap, decode_file(second.path), gap])
    model = FailsOnce(WhisperTranscriber(), fail_on_call=3)
    pipeline = Pipeline(StreamingAsr(model), chunks_of(audio), [],
                        queue=QueuePolicy(live=False), first_segment_id=7)
    updates = run(pipeline)
    assert pipeline.stats.asr_failures == 1
    assert "the ASR worker failed" in caplog.text
    finals = [u for u in updates if u.status == "final"]
    assert finals and min(u.segment_id for u in updates) >= 7
    assert len({u.segment_id for u in finals}) == len(finals)
    # The crash cost at most the words of the step it hit; the next sentence is whole.
    assert wer([second.transcript], [finals[-1].text]) < 0.2


def test_the_asr_core_restarts_after_a_failure_and_ids_go_on() -> None:
    """The core alone, chunk by chunk on this thread: a failed call starts a fresh ASR
    state whose segments (numbered from 0 inside it) go on after the ids already used."""
    by_name = {c.path.name: c for c in clips()}
    gap = np.zeros(16_000, dtype=np.float32)
    audio = np.concatenate([decode_file(by_name["LJ001-0001.flac"].path), gap,
                            decode_file(by_name["LJ001-0002.flac"].path), gap])
    core = AsrCore(StreamingAsr(FailsOnce(WhisperTranscriber(), fail_on_call=12)),
                   step_every_due=True, first_segment_id=3)
    first_asr = core.asr
    updates: list[SegmentUpdate] = []
    before: list[int] = []  # segment ids published before the failure
    chunks = [AudioChunk(audio[i : i + 1600], i / 16_000) for i in range(0, len(audio), 1600)]
    for n, chunk in enumerate(chunks):
        produced = core.feed([chunk], n == len(chunks) - 1, lambda: 0.0)
        if not core.failures:
            before += [u.segment_id for u in produced]
        updates += produced
    assert core.failures == 1 and core.asr is not first_asr
    after = [u.segment_id for u in updates[len(before):]]
    assert before and after and min(after) > max(before)
    assert core.audio_s == pytest.approx(len(audio) / 16_000, abs=1e-6)
    ids = [u.segment_id for u in updates]
    assert min(ids) >= 3 and core.next_segment_id == max(ids) + 1
    finals = [u.segment_id for u in updates if u.status == "final"]
    assert len(set(finals)) == len(finals)


def test_live_overflow_drops_oldest_audio() -> None:
    clip = next(c for c in clips() if c.path.name == "jfk.flac")
    audio = decode_file(clip.path)
    pipeline = Pipeline(StreamingAsr(WhisperTranscriber()), chunks_of(audio), [],
                        queue=QueuePolicy(live=True, max_chunks=5))
    run(pipeline)
    assert pipeline.stats.dropped_chunks > 0
    assert pipeline.stats.audio_s + pipeline.stats.dropped_chunks * 0.1 == pytest.approx(
        len(audio) / 16_000, abs=0.11)
