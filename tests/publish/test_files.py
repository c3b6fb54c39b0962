"""SRT / WebVTT / JSONL rendering, parsed back and checked."""

from __future__ import annotations

import json
import re

from subtitled.events import SegmentUpdate, Word
from subtitled.publish.files import MAX_CUE_CHARS, MAX_LINE_CHARS, render


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
