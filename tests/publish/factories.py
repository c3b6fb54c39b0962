"""Small builders of domain data for the publish tests."""

from __future__ import annotations

from subtitled.events import SegmentStatus, SegmentUpdate, Translation, Word


def words(text: str, start_s: float = 0.0, step_s: float = 0.25) -> tuple[Word, ...]:
    """Whisper-style words (leading spaces kept), one every `step_s` seconds."""
    return tuple(
        Word(f" {w}", start_s + i * step_s, start_s + (i + 1) * step_s)
        for i, w in enumerate(text.split())
    )


def segment(
    segment_id: int,
    revision: int = 0,
    status: SegmentStatus = "final",
    committed: str = "hello world",
    partial: str = "",
    translations: dict[str, Translation] | None = None,
    emitted_unix: float = 1_700_000_000.0,
) -> SegmentUpdate:
    done = words(committed)
    tail = words(partial, start_s=done[-1].end_s if done else 0.0)
    return SegmentUpdate(
        segment_id=segment_id,
        revision=revision,
        status=status,
        committed=done,
        partial=tail,
        emitted_unix=emitted_unix,
        translations=translations or {},
    )


def partial(segment_id: int, revision: int, text: str = "hello wor") -> SegmentUpdate:
    return segment(segment_id, revision, "partial", committed="", partial=text)


def final(segment_id: int, revision: int = 99, text: str = "hello world") -> SegmentUpdate:
    return segment(segment_id, revision, "final", committed=text)
