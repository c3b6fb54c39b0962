"""Voice activity: the pure hysteresis core on synthetic probabilities, Silero on real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.asr.vad import WINDOW_S, SileroStream, SpeechTracker, VadConfig
from subtitled.errors import ConfigError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
JFK = DATA / "speech" / "misc" / "jfk.flac"


def probs(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# SpeechTracker: Silero's threshold / neg_threshold hysteresis (0.5 / 0.35 by default).


@pytest.mark.parametrize(
    ("sequence", "flags"),
    [
        ([0.1, 0.6, 0.7, 0.2], [False, True, True, False]),
        # Between the two thresholds the state holds, whichever it is.
        ([0.6, 0.4, 0.45, 0.3], [True, True, True, False]),
        ([0.1, 0.4, 0.45, 0.49], [False, False, False, False]),
        # Onset at >= 0.5; offset only below 0.35.
        ([0.5, 0.36, 0.34], [True, True, False]),
    ],
)
def test_hysteresis(sequence: list[float], flags: list[bool]) -> None:
    tracker = SpeechTracker()
    seen = []
    for p in sequence:
        tracker.push(probs(p))
        seen.append(tracker.speaking)
    assert seen == flags


def test_speech_ratio_and_silence_length() -> None:
    tracker = SpeechTracker()
    tracker.push(probs(*([0.0] * 10 + [0.9] * 10 + [0.0] * 20)))
    assert tracker.time_s == pytest.approx(40 * WINDOW_S)
    assert tracker.heard_speech
    assert tracker.last_speech_end_s == pytest.approx(20 * WINDOW_S)
    assert tracker.silence_s() == pytest.approx(20 * WINDOW_S)
    assert tracker.speech_ratio(0.0, 10 * WINDOW_S) == 0.0
    assert tracker.speech_ratio(10 * WINDOW_S, 20 * WINDOW_S) == 1.0
    assert tracker.speech_ratio(0.0, 20 * WINDOW_S) == pytest.approx(0.5)
    assert tracker.has_speech(5 * WINDOW_S, 15 * WINDOW_S)
    assert not tracker.has_speech(21 * WINDOW_S, 40 * WINDOW_S)


def test_silence_is_zero_while_speaking_and_pause_uses_config() -> None:
    tracker = SpeechTracker(VadConfig(pause_s=0.2))
    tracker.push(probs(0.9, 0.9))
    assert tracker.silence_s() == 0.0
    tracker.push(probs(*([0.1] * 7)))
    assert tracker.silence_s() >= tracker.config.pause_s


def test_forget_before_keeps_later_answers() -> None:
    tracker = SpeechTracker()
    tracker.push(probs(*([0.9] * 10 + [0.0] * 10 + [0.9] * 10)))
    before = tracker.speech_ratio(15 * WINDOW_S, 30 * WINDOW_S)
    tracker.forget_before(12 * WINDOW_S)
    assert tracker.speech_ratio(15 * WINDOW_S, 30 * WINDOW_S) == before


# SileroStream: the real ONNX model on a real clip.


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    from faster_whisper.audio import decode_audio

    if not JFK.is_file():
        pytest.fail(f"shared speech clip missing: {JFK}")
    audio: np.ndarray = decode_audio(str(JFK), sampling_rate=SAMPLE_RATE_HZ)
    return audio


def test_speech_is_detected_in_speech_and_not_in_digital_silence(jfk: np.ndarray) -> None:
    silence = np.zeros(SAMPLE_RATE_HZ * 2, dtype=np.float32)
    out = SileroStream()(np.concatenate([silence, jfk]))
    n_silence = len(silence) // int(WINDOW_S * SAMPLE_RATE_HZ)
    assert out[:n_silence].max() < 0.1
    # "And so my fellow Americans" runs from about 0.3 s to 2.2 s of the clip.
    speech = out[n_silence + int(0.6 / WINDOW_S) : n_silence + int(1.8 / WINDOW_S)]
    assert float(np.mean(speech > 0.5)) > 0.8
    tracker = SpeechTracker()
    tracker.push(out)
    assert tracker.heard_speech
    assert tracker.speech_ratio(0.0, 2.0) == 0.0


def test_incremental_matches_one_call(jfk: np.ndarray) -> None:
    whole = SileroStream()(jfk)
    stream = SileroStream()
    rng = np.random.default_rng(0)
    pieces, at = [], 0
    while at < len(jfk):
        # Odd block sizes: windows straddle calls, some calls hold no whole window.
        size = int(rng.integers(1, 3000))
        pieces.append(stream(jfk[at : at + size]))
        at += size
    incremental = np.concatenate(pieces)
    assert len(incremental) == len(whole) == len(jfk) // 512
    np.testing.assert_allclose(incremental, whole, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"threshold": 0.3, "neg_threshold": 0.4}, "streaming.vad"),
        ({"threshold": 1.0}, "streaming.vad"),
        ({"pause_s": 0.0}, "streaming.vad.pause_s"),
    ],
)
def test_config_is_validated_with_the_key_named(settings: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        VadConfig(**settings)
