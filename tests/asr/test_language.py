"""Language identification bookkeeping: when the transcriber asks Whisper again."""

from __future__ import annotations

import pytest

from subtitled.asr.language import LanguageConfig, LanguageTracker
from subtitled.errors import ConfigError

CONFIG = LanguageConfig(detect_s=3.0, min_s=1.0, pause_s=10.0)


def test_a_configured_language_is_never_identified() -> None:
    tracker = LanguageTracker("de", CONFIG)
    assert tracker.language == "de"
    assert not tracker.needs_detection(0.0, 5.0)
    assert not tracker.needs_detection(100.0, 5.0)  # not after a pause either


@pytest.mark.parametrize(
    ("buffers", "expected"),
    [
        # (offset_s, audio_s) of successive transcriptions -> identified each time?
        ([(0.0, 0.5)], [False]),  # too short to tell
        ([(0.0, 1.0), (0.0, 1.5), (0.0, 3.0), (0.0, 3.5)], [True, True, True, False]),
        ([(0.0, 3.2), (2.0, 1.5)], [True, False]),  # kept once a long buffer was heard
    ],
)
def test_auto_identifies_until_a_long_enough_buffer(
    buffers: list[tuple[float, float]], expected: list[bool]
) -> None:
    tracker = LanguageTracker("auto", CONFIG)
    seen = []
    for offset_s, audio_s in buffers:
        due = tracker.needs_detection(offset_s, audio_s)
        seen.append(due)
        if due:
            tracker.detected("fr", 0.9, audio_s)
            tracker.heard(offset_s + audio_s - 0.2)
    assert seen == expected
    assert tracker.language == ("fr" if any(expected) else None)


def test_a_long_pause_identifies_again() -> None:
    tracker = LanguageTracker("auto", CONFIG)
    assert tracker.needs_detection(0.0, 4.0)
    tracker.detected("de", 0.95, 4.0)
    tracker.heard(3.8)
    assert not tracker.needs_detection(12.0, 4.0)  # 8.2 s after the last word
    assert tracker.needs_detection(13.9, 4.0)  # 10.1 s after it
    tracker.detected("es", 0.9, 4.0)
    assert tracker.language == "es"
    tracker.heard(17.0)
    assert not tracker.needs_detection(18.0, 4.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LanguageConfig(min_s=0.0),
        lambda: LanguageConfig(min_s=4.0, detect_s=3.0),
        lambda: LanguageConfig(detect_s=31.0),
        lambda: LanguageConfig(pause_s=0.0),
    ],
)
def test_config_is_validated(make: object) -> None:
    with pytest.raises(ConfigError, match=r"asr\.language_id"):
        make()  # type: ignore[operator]
