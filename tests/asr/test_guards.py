"""Guards against Whisper's failure modes: synchronous, table-driven, hand-made words."""

from __future__ import annotations

import pytest

from subtitled.asr.guards import (
    drop_context_echo,
    drop_repetition_loops,
    drop_trailing_echo,
    is_hallucination,
)
from subtitled.events import Word


def words(text: str, start_s: float = 0.0) -> list[Word]:
    """One `Word` per space-separated token, 0.3 s each, with Whisper's leading space."""
    return [
        Word(" " + token, start_s + 0.3 * i, start_s + 0.3 * (i + 1))
        for i, token in enumerate(text.split())
    ]


def text(ws: list[Word]) -> str:
    return "".join(w.text for w in ws).strip()


@pytest.mark.parametrize(
    ("hypothesis", "expected"),
    [
        # A phrase of three or more words said twice in a row is a loop.
        (
            "it should be mentioned. it should be mentioned. it should be mentioned.",
            "it should be mentioned.",
        ),
        ("and it was a matter. and it was a matter.", "and it was a matter."),
        # A loop cut off by the token cap ends in part of the phrase, even mid-word.
        (
            "at that time. which obtained at that time. which obtained at",
            "at that time. which obtained",
        ),
        (
            "our purpose printing then for our purpose printing then for our pur",
            "our purpose printing then for",
        ),
        # Two-word phrases need three repeats, single words five.
        ("thank you thank you thank you", "thank you"),
        ("the the the the the end", "the end"),
        ("s s s s s s s s s", "s"),
    ],
)
def test_repetition_loops_are_collapsed(hypothesis: str, expected: str) -> None:
    assert text(drop_repetition_loops(words(hypothesis))) == expected


@pytest.mark.parametrize(
    "speech",
    [
        "no, no, no, I said",
        "no no",
        "very very good",
        "thank you, thank you.",
        "that that is is that that is not is not",
        "he said it was going to be fine and it was",
    ],
)
def test_ordinary_repeats_are_kept(speech: str) -> None:
    assert text(drop_repetition_loops(words(speech))) == speech


def test_a_loop_that_starts_in_the_forced_prefix_keeps_only_new_words() -> None:
    prefix = words("has never been surpassed printing then for")
    tail = words("our purpose printing then for our purpose printing then for our pur", 3.0)
    kept = drop_repetition_loops(tail, context=prefix)
    assert text(kept) == "our purpose"
    assert all(w in tail for w in kept)


def test_the_forced_prefix_itself_is_never_dropped_or_returned() -> None:
    prefix = words("one two three one two three")
    tail = words("four five", 3.0)
    assert drop_repetition_loops(tail, context=prefix) == tail


@pytest.mark.parametrize(
    ("phrase", "speech_ratio", "no_speech_prob", "dropped"),
    [
        ("Thank you for watching.", 0.1, 0.1, True),  # the VAD heard almost nothing
        ("Thank you for watching.", 0.9, 0.8, True),  # Whisper itself says no speech
        ("Thank you for watching.", 0.9, 0.1, False),  # strong evidence: someone said it
        ("Thank you.", 0.2, 0.0, True),
        ("You", 0.0, 0.6, True),
        ("Please subscribe to my channel!", 0.3, 0.2, True),
        # Not a known phrase: kept whatever the evidence.
        ("The meeting is over.", 0.1, 0.9, False),
        ("Thank you for the report.", 0.1, 0.9, False),
    ],
)
def test_hallucination_phrases_dropped_only_with_weak_evidence(
    phrase: str, speech_ratio: float, no_speech_prob: float, dropped: bool
) -> None:
    assert is_hallucination(words(phrase), speech_ratio, no_speech_prob) is dropped


def test_no_words_is_not_a_hallucination() -> None:
    assert not is_hallucination([], 0.0, 1.0)


def _words(text: str) -> list[Word]:
    return [Word(" " + w, i * 0.3, i * 0.3 + 0.25) for i, w in enumerate(text.split())]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # Whisper re-reads the buffer when the audio runs out, cut by the length cap.
        (
            "The Roman letter was used side by side with the gothic. The Roman letter was used "
            "side by side with",
            "The Roman letter was used side by side with the gothic.",
        ),
        ("a b c d e f a b c d", "a b c d e f"),
        # Three repeated words are not an echo; nor is a repeat that is not at the end.
        ("I think that I think", "I think that I think"),
        ("we went home and then we went home early", "we went home and then we went home early"),
    ],
)
def test_drop_trailing_echo(text: str, kept: str) -> None:
    assert "".join(w.text for w in drop_trailing_echo(_words(text))).strip() == kept


@pytest.mark.parametrize(
    ("text", "context", "kept"),
    [
        ("the roman letter was used", "as he said the roman letter was used side by side", ""),
        (
            "in being comparatively modern",
            "the arts and crafts represented in the exhibition",
            "in being comparatively modern",
        ),
        ("said the roman letter", "the roman letter", "said the roman letter"),
    ],
)
def test_drop_context_echo(text: str, context: str, kept: str) -> None:
    out = drop_context_echo(_words(text), context)
    assert "".join(w.text for w in out).strip() == kept
