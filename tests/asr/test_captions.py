"""SentenceCase, the pure core that makes captions read as sentences: table-driven."""

from __future__ import annotations

import pytest

from subtitled.asr.captions import SentenceCase, capitalised, without_end_mark
from subtitled.events import SegmentStatus, SegmentUpdate, Word


def update(segment_id: int, revision: int, status: SegmentStatus, committed: str,
           partial: str = "") -> SegmentUpdate:
    words = [Word(" " + t, i * 0.5, i * 0.5 + 0.4)
             for i, t in enumerate((committed + " " + partial).split())]
    n = len(committed.split())
    return SegmentUpdate(segment_id, revision, status, tuple(words[:n]), tuple(words[n:]), 0.0)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (" printing", " Printing"),
        (" Printing", " Printing"),
        (" über", " Über"),
        (' "quoted', ' "quoted'),
        (" 1455", " 1455"),
    ],
)
def test_capitalised(text: str, shown: str) -> None:
    assert capitalised(Word(text, 0.0, 1.0)).text == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (" modern.", " modern"),
        (" only...", " only"),
        (" only…", " only"),
        (' said."', ' said"'),
        (" Mr.", " Mr."),  # an abbreviation ends no sentence
        (" J.", " J."),  # nor an initial
        (" really?", " really?"),  # a question is kept
        (" ...", None),  # nothing left: the word goes
        (" word", " word"),
    ],
)
def test_without_end_mark(text: str, shown: str | None) -> None:
    result = without_end_mark(Word(text, 0.0, 1.0))
    assert (None if result is None else result.text) == shown


def shown(updates: list[SegmentUpdate]) -> list[tuple[int, str, str, str]]:
    return [(u.segment_id, u.status, u.committed_text, "".join(w.text for w in u.partial).strip())
            for u in updates]


def test_a_stream_reads_as_sentences() -> None:
    captions = SentenceCase()
    stream = [
        update(0, 0, "partial", "", "printing."),
        update(0, 1, "partial", "printing", "in the only..."),
        update(0, 2, "partial", "printing", "in the only."),  # shows as the one before
        update(0, 3, "final", "printing in the only sense."),
        update(1, 0, "partial", "it is", "done."),
        update(1, 1, "final", "it is done and"),  # closed mid-sentence (a pause)
        update(2, 0, "partial", "then", "more"),
        update(2, 1, "final", "then more."),
    ]
    assert shown(captions.apply(stream)) == [
        (0, "partial", "", "Printing"),
        (0, "partial", "Printing", "in the only"),
        (0, "final", "Printing in the only sense.", ""),
        (1, "partial", "It is", "done"),
        (1, "final", "It is done and", ""),
        (2, "partial", "then", "more"),  # goes on the sentence before: no capital
        (2, "final", "then more.", ""),
    ]


def test_committed_words_stay_the_same_from_revision_to_revision() -> None:
    captions = SentenceCase()
    first, second = captions.apply([update(0, 0, "partial", "so my", "fellow."),
                                    update(0, 1, "partial", "so my fellow", "Americans.")])
    assert second.committed[:2] == first.committed
    assert first.committed[0].text == " So"
