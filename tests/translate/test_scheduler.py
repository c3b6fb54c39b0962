"""The translate stage's core, with no event loop: each rule as a script of calls and the
revisions it says to publish."""

from __future__ import annotations

import pytest

from subtitled.events import SegmentUpdate, Translation, Word
from subtitled.translate.scheduler import TranslationScheduler


def seg(sid: int, words: str, final: bool = False, partial: str = "") -> SegmentUpdate:
    committed = tuple(Word(" " + w, i, i + 1.0) for i, w in enumerate(words.split()))
    tail = tuple(Word(" " + w, 9.0, 10.0) for w in partial.split())
    return SegmentUpdate(sid, 0, "final" if final else "partial", committed, tail, 100.0)


def de(stable: str, unstable: str = "") -> dict[str, Translation]:
    return {"de": Translation(stable, unstable)}


def shape(out: list[SegmentUpdate]) -> list[tuple[int, int, str, str, bool, str]]:
    """(segment, revision, status, text, retranslated, German) of each published revision."""
    return [
        (u.segment_id, u.revision, u.status, u.text, u.retranslated,
         u.translations["de"].stable if "de" in u.translations else "")
        for u in out
    ]


def test_without_a_translator_revisions_pass_numbered_and_a_final_ends_the_segment() -> None:
    core = TranslationScheduler()
    out = [*core.submit(seg(1, "a"), False), *core.submit(seg(1, "a b", final=True), False),
           *core.submit(seg(1, "c"), False)]
    assert shape(out) == [(1, 0, "partial", "a", False, ""), (1, 1, "final", "a b", False, ""),
                          (1, 0, "partial", "c", False, "")]
    assert core.idle and core.take() is None


def test_a_newer_revision_supersedes_a_queued_one_oldest_segment_first() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a"), True)
    core.submit(seg(2, "x"), True)
    core.submit(seg(1, "a b"), True)
    assert core.stats.superseded == 1
    taken = [core.take(), core.take(), core.take()]
    assert [(u.segment_id, u.text) for u in taken if u] == [(1, "a b"), (2, "x")]
    assert taken[2] is None


def test_nothing_supersedes_a_queued_final() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a b", final=True), True)
    core.submit(seg(1, "late"), True)
    taken = core.take()
    assert taken is not None and taken.status == "final" and core.take() is None
    assert core.stats.superseded == 0


def test_a_final_stands_in_as_partial_until_its_translation_is_final() -> None:
    core = TranslationScheduler()
    out = core.submit(seg(1, "a b", final=True), True)
    assert shape(out) == [(1, 0, "partial", "a b", False, "")]
    taken = core.take()
    assert taken is not None
    out = core.translated(taken, de("A B"), now=200.0)
    assert shape(out) == [(1, 1, "final", "a b", False, "A B")]
    assert out[0].emitted_unix == 200.0


def test_a_partial_translation_resends_the_latest_revision_once() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a"), True)
    taken = core.take()
    core.submit(seg(1, "a b"), True)  # came while the model worked on "a"
    assert taken is not None
    out = core.translated(taken, de("A"), now=200.0)
    assert shape(out) == [(1, 1, "partial", "a b", True, "A")]
    # The same translation again: nothing new to show.
    again = core.take()
    assert again is not None
    assert core.translated(again, de("A"), now=201.0) == []


def test_a_partials_translation_waits_for_a_queued_final() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a"), True)
    taken = core.take()
    core.submit(seg(1, "a b", final=True), True)
    assert taken is not None
    assert core.translated(taken, de("A"), now=200.0) == []
    final = core.take()
    assert final is not None
    assert shape(core.translated(final, de("A B"), now=201.0)) == [
        (1, 2, "final", "a b", False, "A B")
    ]


@pytest.mark.parametrize("final", [True, False])
def test_a_failure_publishes_a_final_with_what_was_stable(final: bool) -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a"), True)
    first = core.take()
    assert first is not None
    core.translated(first, de("A"), now=200.0)
    core.submit(seg(1, "a b", final=final), True)
    taken = core.take()
    assert taken is not None
    out = core.failed(taken)
    assert core.stats.failures == 1
    if final:
        assert shape(out) == [(1, 2, "final", "a b", False, "A")]
    else:
        assert out == []


def test_flush_publishes_queued_finals_and_drops_partials() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a b", final=True), True)
    core.submit(seg(2, "c"), True)
    out = core.flush()
    assert shape(out) == [(1, 1, "final", "a b", False, "")]
    assert core.idle


def test_finals_only_queues_finals_only() -> None:
    core = TranslationScheduler()
    core.finals_only = True
    out = core.submit(seg(1, "a"), True)
    assert shape(out) == [(1, 0, "partial", "a", False, "")]
    assert core.idle
    core.submit(seg(1, "a b", final=True), True)
    taken = core.take()
    assert taken is not None and taken.status == "final"


@pytest.mark.parametrize(("include_partial", "text", "words"), [(False, "a", 1), (True, "a b", 2)])
def test_the_source_is_committed_words_unless_partials_are_translated(
    include_partial: bool, text: str, words: int
) -> None:
    core = TranslationScheduler(include_partial=include_partial)
    source = core.source(seg(1, "a", partial="b"))
    assert (source.text, source.words, source.final) == (text, words, False)


def test_a_taken_revision_with_no_translator_left_passes_as_it_stands() -> None:
    core = TranslationScheduler()
    core.submit(seg(1, "a b", final=True), True)
    taken = core.take()
    assert taken is not None
    assert shape(core.untranslated(taken)) == [(1, 1, "final", "a b", False, "")]
    # The segment is forgotten: a new segment with the same id starts at revision 0.
    assert shape(core.submit(seg(1, "c"), False)) == [(1, 0, "partial", "c", False, "")]
