"""Captions that read as sentences: the last touch on the ASR's segment revisions.

Whisper's text is right for a whole transcript, less so one segment at a time:

- A segment that starts a sentence (the stream's first, or one after a segment that
  ended a sentence) is shown with a capital. A buffer that starts mid-recording, or
  after a trim, often comes out lower-case: the demo's first caption read "printing in
  the only sense…".
- The last word of a partial tail loses its "." or ellipsis. Whisper ends a sentence
  wherever the audio ends (`subtitled.asr.policy` measures why that mark is no
  evidence), so it flickers on and off from one step to the next. Committed and final
  words keep their punctuation.

`SentenceCase` is a pure core: it remembers only whether the next segment starts a
sentence and what the open segment last showed, so a revision that differs from the one
before only in a dropped mark is not sent again.
"""

from __future__ import annotations

import dataclasses
import re

from subtitled.asr.policy import CLOSING_MARKS, ends_sentence
from subtitled.events import SegmentUpdate, Word

_TRAILING_MARK = re.compile(f"(\\.\\.\\.|…|\\.)(?=[{CLOSING_MARKS}]*$)")
_ELLIPSIS_END = re.compile(f"(\\.\\.\\.|…)[{CLOSING_MARKS}]*$")
_PERIOD_END = re.compile(f"\\.[{CLOSING_MARKS}]*$")

Shown = tuple[tuple[str, ...], tuple[str, ...]]


def capitalised(word: Word) -> Word:
    """`word` with its first letter upper-case (Whisper's leading space kept)."""
    text = word.text
    body = text.lstrip()
    if not body or not body[0].islower():
        return word
    lead = text[: len(text) - len(body)]
    return dataclasses.replace(word, text=lead + body[0].upper() + body[1:])


def without_end_mark(word: Word) -> Word | None:
    """`word` without a sentence-final "." or ellipsis; None when nothing else is left.

    "Mr." and initials keep their period: they end no sentence (`ends_sentence`).
    """
    text = word.text.rstrip()
    period = _PERIOD_END.search(text) is not None and ends_sentence(word)
    if not period and _ELLIPSIS_END.search(text) is None:
        return word
    new = _TRAILING_MARK.sub("", text, count=1)
    if not new.strip(" " + CLOSING_MARKS):
        return None
    return dataclasses.replace(word, text=new)


class SentenceCase:
    """Revisions of one stream, in order, made to read as sentences (see the module)."""

    def __init__(self) -> None:
        self._sentence_start = True
        self._segment_id: int | None = None
        self._starts_sentence = True
        self._last_shown: Shown | None = None

    def apply(self, updates: list[SegmentUpdate]) -> list[SegmentUpdate]:
        """The revisions to send for `updates` (a partial that would repeat the one before
        it is left out)."""
        out: list[SegmentUpdate] = []
        for update in updates:
            shown = self._show(update)
            if shown is not None:
                out.append(shown)
        return out

    def _show(self, update: SegmentUpdate) -> SegmentUpdate | None:
        if update.segment_id != self._segment_id:
            self._segment_id = update.segment_id
            self._starts_sentence = self._sentence_start
            self._last_shown = None
        committed = list(update.committed)
        partial = list(update.partial)
        if partial:
            last = without_end_mark(partial[-1])
            partial = partial[:-1] if last is None else [*partial[:-1], last]
        if self._starts_sentence:
            if committed:
                committed[0] = capitalised(committed[0])
            elif partial:
                partial[0] = capitalised(partial[0])
        if update.status == "final":
            self._sentence_start = bool(committed) and ends_sentence(committed[-1])
        else:
            shown = (tuple(w.text for w in committed), tuple(w.text for w in partial))
            if shown == self._last_shown or not (committed or partial):
                return None
            self._last_shown = shown
        return dataclasses.replace(update, committed=tuple(committed), partial=tuple(partial))
