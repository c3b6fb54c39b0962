"""Subtitle files: JSONL (one final segment per line), SRT and WebVTT.

Final segments can be long (a whole sentence); subtitle cues should not be. A cue
holds at most two lines of `MAX_LINE_CHARS` (42, the common broadcast limit) and
`MAX_CUE_S` of speech, split at word boundaries using the word timestamps, and stays
up long enough to be read at `READING_CPS` when the next cue leaves room. A translation
follows the same rules: its words are timed from the source words (see
`_timed_translation`) and split into cues like the source's.
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
MIN_CUE_S = 0.5
READING_CPS = 17.0
"""Characters per second a viewer reads: the same as the overlay page's default `cps`."""


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
            out += _split_words(_timed_translation(t.stable + t.unstable, segment.words))
    # A cue stays up long enough to be read when the next one leaves room, and ends when
    # the next one begins. The last cue ends with its speech: the media may end there.
    for i in range(len(out) - 1):
        cue, next_start_s = out[i], out[i + 1].start_s
        readable_s = min(len(cue.text.replace("\n", " ")) / READING_CPS, MAX_CUE_S)
        end_s = min(max(cue.end_s, cue.start_s + readable_s), next_start_s)
        if end_s != cue.end_s:
            out[i] = Cue(cue.start_s, end_s, cue.text)
    return out


def _timed_translation(text: str, source: Sequence[Word]) -> list[Word]:
    """The words of a segment's translation, timed from its source words.

    Each translated word gets the audio time at which the same share of the source's
    characters has been spoken. Word order differs between languages, so this is only
    proportional, but it follows the source's pace and pauses, and the cues it makes stay
    within the span of the speech they translate.
    """
    tokens = text.split()
    if not tokens or not source:
        return []
    sizes = [max(len(w.text.strip()), 1) for w in source]
    source_chars = sum(sizes)
    target_chars = sum(len(t) for t in tokens)

    def time_at(share: float) -> float:
        left = share * source_chars
        for size, word in zip(sizes, source, strict=True):
            if left <= size:
                return word.start_s + (word.end_s - word.start_s) * left / size
            left -= size
        return source[-1].end_s

    timed: list[Word] = []
    done = 0
    for token in tokens:
        start_s = time_at(done / target_chars)
        done += len(token)
        timed.append(Word(" " + token, start_s, time_at(done / target_chars)))
    return timed


def _split_words(words: Sequence[Word]) -> list[Cue]:
    result: list[Cue] = []
    group: list[Word] = []
    for word in words:
        text = "".join(w.text for w in [*group, word]).strip()
        too_long = len(text) > MAX_CUE_CHARS or _lines(text) is None
        too_slow = bool(group) and word.end_s - group[0].start_s > MAX_CUE_S
        if group and (too_long or too_slow):
            result.append(_cue(group))
            group = []
        group.append(word)
    if group:
        result.append(_cue(group))
    return result


def _cue(words: Sequence[Word]) -> Cue:
    end_s = max(words[-1].end_s, words[0].start_s + MIN_CUE_S)
    return Cue(words[0].start_s, end_s, _wrap("".join(w.text for w in words).strip()))


def _lines(text: str) -> list[str] | None:
    """`text` as one line, or as two lines of at most `MAX_LINE_CHARS` broken at the space
    nearest the middle; None when it does not fit in two such lines."""
    if len(text) <= MAX_LINE_CHARS:
        return [text]
    middle = len(text) // 2
    cuts = [i for i, c in enumerate(text) if c == " "
            and i <= MAX_LINE_CHARS and len(text) - i - 1 <= MAX_LINE_CHARS]
    if not cuts:
        return None
    cut = min(cuts, key=lambda i: abs(i - middle))
    return [text[:cut], text[cut + 1 :]]


def _wrap(text: str) -> str:
    """Break a cue into two lines near the middle when it is over one line long. A cue
    that cannot fit two lines (one word longer than a line) is broken near the middle."""
    lines = _lines(text)
    if lines is not None:
        return "\n".join(lines)
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    cut = min(spaces, key=lambda i: abs(i - len(text) // 2))
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
        return "".join(
            (s.translations[language].stable + s.translations[language].unstable).strip() + "\n"
            for s in finals if s.words and language in s.translations
        )
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
