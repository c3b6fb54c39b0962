"""Subtitle files: JSONL (one final segment per line), SRT and WebVTT.

Final segments can be long (a whole sentence); subtitle cues should not be. A cue
holds at most `max_chars` characters (two lines of 42, the common broadcast limit)
and `max_duration_s`, split at word boundaries using the word timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from subtitled.events import SegmentUpdate, Word

SubtitleFormat = Literal["jsonl", "srt", "vtt", "txt"]
FORMATS: tuple[SubtitleFormat, ...] = ("jsonl", "srt", "vtt", "txt")

MAX_CUE_CHARS = 84
MAX_LINE_CHARS = 42
MAX_CUE_S = 7.0


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: text shown from `start_s` to `end_s` (audio time)."""

    start_s: float
    end_s: float
    text: str


def segment_record(update: SegmentUpdate) -> dict[str, object]:
    """The JSONL record of a final segment (also the transcript journal's)."""
    return {
        "id": update.segment_id,
        "start": round(update.audio_start_s, 3),
        "end": round(update.audio_end_s, 3),
        "text": update.text,
        "words": [
            {"w": w.text.strip(), "start": round(w.start_s, 3), "end": round(w.end_s, 3)}
            for w in update.words
        ],
        "translations": {lang: t.stable + t.unstable for lang, t in update.translations.items()},
    }


def cues(segments: Iterable[SegmentUpdate], language: str | None = None) -> list[Cue]:
    """Cues for the final segments, in the source language or a translation's."""
    out: list[Cue] = []
    for segment in segments:
        if segment.status != "final" or not segment.words:
            continue
        if language is None:
            out += _split_words(segment.words)
        elif language in segment.translations:
            t = segment.translations[language]
            out.append(Cue(segment.audio_start_s, segment.audio_end_s, t.stable + t.unstable))
    # Cues must not overlap: a cue ends when the next begins.
    for i in range(len(out) - 1):
        if out[i].end_s > out[i + 1].start_s:
            out[i] = Cue(out[i].start_s, out[i + 1].start_s, out[i].text)
    return out


def _split_words(words: Sequence[Word]) -> list[Cue]:
    result: list[Cue] = []
    group: list[Word] = []
    for word in words:
        text = "".join(w.text for w in [*group, word]).strip()
        too_long = len(text) > MAX_CUE_CHARS
        too_slow = bool(group) and word.end_s - group[0].start_s > MAX_CUE_S
        if group and (too_long or too_slow):
            result.append(_cue(group))
            group = []
        group.append(word)
    if group:
        result.append(_cue(group))
    return result


def _cue(words: Sequence[Word]) -> Cue:
    end_s = max(words[-1].end_s, words[0].start_s + 0.5)
    return Cue(words[0].start_s, end_s, _wrap("".join(w.text for w in words).strip()))


def _wrap(text: str) -> str:
    """Break a cue into two lines near the middle when it is over one line long."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1 :]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def render(
    segments: Sequence[SegmentUpdate], fmt: SubtitleFormat, language: str | None = None
) -> str:
    """The whole file in `fmt` for the final segments given."""
    finals = [s for s in segments if s.status == "final"]
    if fmt == "jsonl":
        return "".join(json.dumps(segment_record(s), ensure_ascii=False) + "\n" for s in finals)
    if fmt == "txt":
        if language is None:
            return "".join(s.text + "\n" for s in finals)
        return "".join(c.text + "\n" for c in cues(finals, language))
    if fmt == "srt":
        return "".join(
            f"{i}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{c.text}\n\n"
            for i, c in enumerate(cues(finals, language), start=1)
        )
    body = "".join(
        f"{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{c.text}\n\n"
        for c in cues(finals, language)
    )
    return "WEBVTT\n\n" + body
