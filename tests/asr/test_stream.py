"""StreamingAsr end to end: the real whisper tiny.en model and Silero VAD on real speech."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.stream import StreamConfig, StreamingAsr
from subtitled.asr.whisper import WhisperConfig, WhisperTranscriber, default_model_path
from subtitled.errors import ConfigError, ModelError
from subtitled.events import AudioChunk, SegmentUpdate

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPEECH = DATA / "speech"
BLOCK_S = 0.1
"""Capture block length fed to the stream, as `capture.block_s` does."""
GAP_S = 0.3
"""Silence between clips concatenated into one stream (as `subtitled bench --long-form`)."""

Audio = npt.NDArray[np.float32]


def normalise(text: str) -> str:
    """Lower-case, keep [a-z0-9'] and spaces (the shared data README's normalisation)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def manifest() -> dict[str, str]:
    """Clip path (relative to speech/) -> reference transcript."""
    with (SPEECH / "manifest.tsv").open(encoding="utf-8") as f:
        return {row["path"]: row["transcript"] for row in csv.DictReader(f, delimiter="\t")}


def load(path: str) -> Audio:
    from faster_whisper.audio import decode_audio

    file = SPEECH / path
    if not file.is_file():
        pytest.fail(f"shared speech clip missing: {file}")
    audio: Audio = decode_audio(str(file), sampling_rate=SAMPLE_RATE_HZ)
    return audio


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    try:
        return WhisperTranscriber(WhisperConfig())
    except ModelError as exc:
        pytest.skip(f"the bundled ASR model is not installed ({exc})")


def blocks(audio: Audio) -> Iterator[AudioChunk]:
    size = int(BLOCK_S * SAMPLE_RATE_HZ)
    for at in range(0, len(audio), size):
        yield AudioChunk(audio[at : at + size], at / SAMPLE_RATE_HZ)


def run(asr: StreamingAsr, audio: Audio) -> list[SegmentUpdate]:
    """Feed `audio` block by block, stepping whenever a step is due, then finish."""
    updates: list[SegmentUpdate] = []
    for chunk in blocks(audio):
        now = chunk.end_s
        updates += asr.accept(chunk, now)
        if asr.due():
            updates += asr.step(now)
    updates += asr.finish(len(audio) / SAMPLE_RATE_HZ)
    return updates


def committed_text(updates: list[SegmentUpdate]) -> str:
    return " ".join(u.committed_text for u in updates if u.status == "final")


def check_revisions(updates: list[SegmentUpdate], duration_s: float) -> None:
    """Committed words are never revised; every segment ends with one final revision."""
    last: dict[int, SegmentUpdate] = {}
    for update in updates:
        before = last.get(update.segment_id)
        if before is not None:
            assert before.status == "partial", "a revision after the final"
            assert update.revision > before.revision
            assert update.committed[: len(before.committed)] == before.committed
        last[update.segment_id] = update
    assert all(u.status == "final" for u in last.values())
    finals = [u for u in updates if u.status == "final"]
    assert [u.segment_id for u in finals] == sorted(last)
    times = [(w.start_s, w.end_s) for u in finals for w in u.committed]
    assert all(0.0 <= start <= end <= duration_s + 0.5 for start, end in times)
    assert [end for _, end in times] == sorted(end for _, end in times)


@pytest.mark.parametrize(
    ("clip", "max_wer"),
    [
        ("misc/jfk.flac", 0.15),  # long pauses between phrases
        ("librispeech/1089-134686-0000.flac", 0.15),
        ("ljspeech/LJ001-0101.flac", 0.15),
    ],
)
def test_clip(transcriber: WhisperTranscriber, clip: str, max_wer: float) -> None:
    audio = load(clip)
    updates = run(StreamingAsr(transcriber), audio)
    check_revisions(updates, len(audio) / SAMPLE_RATE_HZ)
    assert any(u.status == "partial" and u.partial for u in updates), "no partial shown"
    assert wer(manifest()[clip], committed_text(updates)) <= max_wer


@pytest.mark.parametrize("kind", ["digital silence", "white noise"])
def test_silence_and_noise_produce_no_words(transcriber: WhisperTranscriber, kind: str) -> None:
    n = 8 * SAMPLE_RATE_HZ
    if kind == "white noise":
        audio = np.random.default_rng(0).normal(0.0, 0.05, n).astype(np.float32)
    else:
        audio = np.zeros(n, dtype=np.float32)
    asr = StreamingAsr(transcriber)
    assert [u for u in run(asr, audio) if u.words] == []
    assert asr.transcriptions == 0, "the VAD let silence through to Whisper"


def test_a_gap_in_the_audio_closes_the_segment(transcriber: WhisperTranscriber) -> None:
    audio = load("misc/jfk.flac")[: int(2.4 * SAMPLE_RATE_HZ)]  # "And so my fellow Americans"
    asr = StreamingAsr(transcriber)
    updates: list[SegmentUpdate] = []
    for chunk in blocks(audio):
        updates += asr.accept(chunk, chunk.end_s)
        if asr.due():
            updates += asr.step(chunk.end_s)
    # The device comes back 5 s later: what was heard before the gap is final.
    updates += asr.accept(AudioChunk(np.zeros(1600, np.float32), 7.4), 7.5)
    finals = [u for u in updates if u.status == "final"]
    assert len(finals) == 1
    assert wer("and so my fellow americans", finals[0].committed_text) <= 0.2


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: StreamConfig(step_s=0.0), "streaming.step_s"),
        (lambda: StreamConfig(step_s=3.0), "streaming.step_s"),
        (lambda: StreamConfig(context_chars=-1), "streaming.context_chars"),
        (lambda: WhisperConfig(beam_size=0), "asr.beam_size"),
        (lambda: WhisperConfig(threads=0), "asr.threads"),
        (lambda: WhisperConfig(min_window_s=31.0), "asr.min_window_s"),
    ],
)
def test_config_is_validated_with_the_key_named(make: Callable[[], object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make()


@pytest.mark.slow
def test_streaming_wer_close_to_whole_clip_wer(transcriber: WhisperTranscriber) -> None:
    """Streaming costs at most 0.03 absolute WER against whole-clip faster-whisper
    (beam 5) on the same audio: 8 consecutive LJSpeech clips and the JFK clip."""
    from faster_whisper import WhisperModel

    clips = [f"ljspeech/LJ001-{n:04d}.flac" for n in range(102, 110)] + ["misc/jfk.flac"]
    references = manifest()
    gap = np.zeros(int(GAP_S * SAMPLE_RATE_HZ), dtype=np.float32)
    audio = np.concatenate([part for clip in clips for part in (load(clip), gap)])
    reference = " ".join(references[clip] for clip in clips)

    streaming = committed_text(run(StreamingAsr(transcriber), audio))

    model = WhisperModel(
        str(default_model_path()), device="cpu", compute_type="int8", cpu_threads=1
    )
    segments, _ = model.transcribe(audio, language="en", beam_size=5)
    whole = " ".join(s.text for s in segments)

    streaming_wer, whole_wer = wer(reference, streaming), wer(reference, whole)
    assert streaming_wer <= whole_wer + 0.03, (streaming_wer, whole_wer, streaming)
