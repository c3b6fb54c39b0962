"""SRT / WebVTT / JSONL rendering, parsed back and checked."""

from __future__ import annotations

import json
import re

import pytest

from subtitled.events import SegmentUpdate, Word
from subtitled.publish.files import (
    MAX_CUE_CHARS,
    MAX_CUE_S,
    MAX_LINE_CHARS,
    READING_CPS,
    render,
)


def segment(segment_id: int, words: list[tuple[str, float, float]]) -> SegmentUpdate:
    return SegmentUpdate(
        segment_id=segment_id,
        revision=0,
        status="final",
        committed=tuple(Word(t, s, e) for t, s, e in words),
        partial=(),
        emitted_unix=0.0,
    )


LONG = segment(0, [(f" word{i}", 1.0 + 0.4 * i, 1.3 + 0.4 * i) for i in range(30)])
SHORT = segment(1, [(" Hello", 3661.0, 3661.4), (" world.", 3661.5, 3662.25)])
PARTIAL = SegmentUpdate(2, 0, "partial", (), (Word(" unstable", 0, 1),), 0.0)

SRT_CUE = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+?)\n\n", re.S
)


def to_s(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_srt_round_trip() -> None:
    text = render([LONG, PARTIAL, SHORT], "srt")
    cues = SRT_CUE.findall(text)
    assert "".join(m.group(0) for m in SRT_CUE.finditer(text)) == text  # nothing unparsed
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1))
    words = " ".join(c[9].replace("\n", " ") for c in cues).split()
    assert words == [f"word{i}" for i in range(30)] + ["Hello", "world."]
    assert "unstable" not in text  # partials never reach files
    previous_end = 0.0
    for cue in cues:
        start, end = to_s(*cue[1:5]), to_s(*cue[5:9])
        assert previous_end <= start < end
        previous_end = end
        assert len(cue[9].replace("\n", " ")) <= MAX_CUE_CHARS
        assert all(len(line) <= MAX_LINE_CHARS for line in cue[9].split("\n"))
    assert cues[0][1:5] == ("00", "00", "01", "000")
    assert cues[-1][5:9] == ("01", "01", "02", "250")


def test_vtt_header_and_timestamps() -> None:
    text = render([SHORT], "vtt")
    assert text.startswith("WEBVTT\n\n")
    assert "01:01:01.000 --> 01:01:02.250\nHello world.\n" in text


def test_jsonl_records() -> None:
    lines = render([LONG, PARTIAL, SHORT], "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [0, 1]
    assert records[1]["text"] == "Hello world."
    assert records[1]["start"] == 3661.0 and records[1]["end"] == 3662.25
    assert records[1]["words"][0] == {"w": "Hello", "start": 3661.0, "end": 3661.4}


def spoken(segment_id: int, text: str, start_s: float, end_s: float,
           translations: dict[str, str]) -> SegmentUpdate:
    """A final segment of `text`, its words spread evenly over [start_s, end_s]."""
    from subtitled.events import Translation

    tokens = text.split()
    step_s = (end_s - start_s) / len(tokens)
    words = tuple(Word(" " + t, start_s + i * step_s, start_s + (i + 1) * step_s)
                  for i, t in enumerate(tokens))
    return SegmentUpdate(segment_id, 0, "final", words, (), 0.0,
                         {lang: Translation(t) for lang, t in translations.items()})


# LJ001-0001 (9.5 s) and LJ001-0002, with German translations longer than two lines.
PRINTING = spoken(
    0, "Printing, in the only sense with which we are at present concerned, differs from "
    "most if not from all the arts and crafts represented in the Exhibition.", 0.0, 9.48,
    {"de": "Der Buchdruck, in dem einzigen Sinne, der uns hier beschäftigt, unterscheidet sich "
           "von den meisten, wenn nicht von allen Künsten und Handwerken der Ausstellung."},
)
MODERN = spoken(1, "in being comparatively modern.", 12.0, 13.2,
                {"de": "Er ist nämlich verhältnismäßig modern, anders als die anderen."})


def srt_cues(text: str) -> list[tuple[float, float, str]]:
    return [(to_s(*c[1:5]), to_s(*c[5:9]), c[9]) for c in SRT_CUE.findall(text)]


def test_translated_cues_follow_the_source_rules() -> None:
    """A translation is split like the source (2 lines of 42, 7 s), timed within the speech
    it translates, and every word of it is written once, in order."""
    for fmt in ("srt", "vtt"):
        text = render([PRINTING, MODERN], fmt, "de")  # type: ignore[arg-type]
        if fmt == "vtt":
            assert text.startswith("WEBVTT\n\n")
            continue
        cues = srt_cues(text)
        assert len(cues) >= 3, text
        words = " ".join(c[2].replace("\n", " ") for c in cues).split()
        assert words == (PRINTING.translations["de"].stable + " "
                         + MODERN.translations["de"].stable).split()
        for start, end, cue in cues:
            lines = cue.split("\n")
            assert len(lines) <= 2 and all(len(line) <= MAX_LINE_CHARS for line in lines), cue
            assert start < end <= start + MAX_CUE_S
        first_segment = [c for c in cues if c[0] < 12.0]
        assert first_segment[0][0] == 0.0 and first_segment[-1][1] >= 9.48
        assert all(c[1] <= 12.0 for c in first_segment)
        assert all(c[0] >= 12.0 and c[1] <= 13.2 for c in cues[len(first_segment):])


def test_a_cue_stays_up_to_be_read_when_the_next_leaves_room() -> None:
    """A cue spoken faster than it can be read (here 30 characters in 1.2 s) stays up
    until it can be read at READING_CPS, or until the next cue starts; the last cue ends
    with its speech."""
    later = spoken(2, "Printing.", 20.0, 20.5, {})
    (cue, next_cue) = srt_cues(render([MODERN, later], "srt", None))
    assert cue[1] == pytest.approx(12.0 + len("in being comparatively modern.") / READING_CPS,
                                   abs=0.002)
    assert next_cue[1] == 20.5
    close = spoken(2, "Printing.", 12.5 + 0.8, 13.8, {})
    cue, _ = srt_cues(render([MODERN, close], "srt", None))
    assert cue[1] == pytest.approx(13.3)  # up to the next cue, no overlap
