"""The metric code on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from subtitled.events import SegmentUpdate, Translation, Word
from subtitled.tools.bench import metrics
from subtitled.tools.bench.metrics import Emission, Percentiles, WordErrors


def w(text: str, start_s: float, end_s: float) -> Word:
    return Word(text, start_s, end_s)


def rev(
    time_s: float,
    segment_id: int,
    revision: int,
    committed: tuple[Word, ...],
    partial: tuple[Word, ...] = (),
    *,
    final: bool = False,
    translations: dict[str, Translation] | None = None,
) -> Emission:
    update = SegmentUpdate(
        segment_id=segment_id,
        revision=revision,
        status="final" if final else "partial",
        committed=committed,
        partial=partial,
        emitted_unix=1e9 + time_s,  # never used by the metrics: they use Emission.time_s
        translations=translations or {},
    )
    return Emission(time_s, update)


THE, CAT, SAT = w(" The", 0.0, 0.3), w(" cat", 0.3, 0.6), w(" sat.", 0.6, 0.9)
CAP = w(" cap", 0.3, 0.6)

# "The cap" is shown, "cap" becomes "cat" (one retraction), then all three are committed.
ONE_RETRACTION = [
    rev(1.0, 0, 0, (), (THE, CAP)),
    rev(1.5, 0, 1, (THE,), (CAT, w(" sat", 0.6, 0.9))),
    rev(2.0, 0, 2, (THE, CAT, SAT), final=True),
]


# ------------------------------------------------------------------ normalise / WER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  don't   STOP  ", "don't stop"),
        ("forty-two", "forty two"),
        ("“Quoted” — dash; semi: colon.", "quoted dash semi colon"),
        ("Route 66", "route 66"),
        ("", ""),
        ("...", ""),
        # Other scripts keep their letters (German, French, Greek); underscores go.
        ("Ein großer Dinosaurier, ça!", "ein großer dinosaurier ça"),
        ("ΑΘΗΝΑ_2004", "αθηνα 2004"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert metrics.normalise(text) == expected


@pytest.mark.parametrize(
    ("references", "hypotheses", "expected"),
    [
        (["the cat sat down"], ["the cat sat down"], 0.0),
        (["the cat sat down"], ["The cat, sat down!"], 0.0),
        (["the cat sat down"], ["the cap sat down"], 1 / 4),  # one substitution
        (["the cat sat down"], ["the cat down"], 1 / 4),  # one deletion
        (["the cat sat down"], ["the cat sat right down"], 1 / 4),  # one insertion
        (["the cat sat down"], [""], 1.0),  # everything deleted
        (["a b c d", "e f"], ["a b c d", "e x"], 1 / 6),  # corpus: errors / all ref words
        (["a b", ""], ["a b", "x y"], 2 / 2),  # an empty reference: its words are insertions
        (["forty-two"], ["forty two"], 0.0),
    ],
)
def test_wer(references: list[str], hypotheses: list[str], expected: float) -> None:
    assert metrics.wer(references, hypotheses) == pytest.approx(expected)


def test_wer_is_undefined_without_reference_words() -> None:
    assert metrics.wer([""], ["hello"]) is None
    assert metrics.word_errors([""], ["hello"]) == WordErrors(0, 0, 1, 0)


def test_wer_needs_pairs() -> None:
    with pytest.raises(ValueError, match="pair"):
        metrics.wer(["a", "b"], ["a"])


def test_word_errors_add_up() -> None:
    a = metrics.word_errors(["a b c d"], ["a x c d"])
    b = metrics.word_errors(["e f"], ["e f g"])
    assert a + b == WordErrors(1, 0, 1, 6)
    assert (a + b).rate == pytest.approx(2 / 6)


# ------------------------------------------------------------- latency, flicker


def test_latency_by_hand() -> None:
    timings = metrics.word_timings(ONE_RETRACTION)
    assert [t.text for t in timings] == [" The", " cat", " sat."]
    # committed first at 1.5 (The) and 2.0 (cat, sat.), minus the word's end
    assert [t.latency_s for t in timings] == pytest.approx([1.5 - 0.3, 2.0 - 0.6, 2.0 - 0.9])
    # first shown with the final text: The at 1.0; cat and sat at 1.5 ("cap" does not count)
    assert [t.partial_latency_s for t in timings] == pytest.approx(
        [1.0 - 0.3, 1.5 - 0.6, 1.5 - 0.9]
    )
    p = metrics.percentiles_ms([t.latency_s for t in timings])
    # sorted 1.1, 1.2, 1.4 s: median 1.2; p90 at rank 1.8 -> 1.2 + 0.8 * 0.2 = 1.36
    assert p is not None
    assert p.p50_ms == pytest.approx(1200.0)
    assert p.p90_ms == pytest.approx(1360.0)


def test_first_shown_counts_from_the_last_uninterrupted_showing() -> None:
    the_late = w(" the", 0.9, 1.1)
    emissions = [
        rev(1.0, 0, 0, (), (THE, w(" the", 0.3, 0.6))),  # a guess at position 1: "the"
        rev(1.5, 0, 1, (), (THE, CAT)),  # ... retracted
        rev(2.0, 0, 2, (THE,), (CAT, SAT, the_late)),  # "the" at position 3
        rev(2.2, 0, 3, (THE, CAT, SAT), (w(" The", 0.9, 1.1),)),  # same word, new case
        rev(3.0, 0, 4, (THE, CAT, SAT, the_late), final=True),
    ]
    timings = metrics.word_timings(emissions)
    # The: shown since 1.0; cat since 1.5 (not 1.0: "the" there was another guess);
    # sat since 2.0; the (position 3) since 2.0, case changes do not interrupt it
    assert [t.shown_s for t in timings] == pytest.approx([1.0, 1.5, 2.0, 2.0])
    assert [t.committed_s for t in timings] == pytest.approx([2.0, 2.2, 2.2, 3.0])


def test_a_word_shown_retracted_and_shown_again_counts_from_the_second_showing() -> None:
    emissions = [
        rev(1.0, 0, 0, (), (THE, CAT)),
        rev(1.5, 0, 1, (), (THE,)),
        rev(2.0, 0, 2, (), (THE, CAT)),
        rev(2.5, 0, 3, (THE, CAT), final=True),
    ]
    assert [t.shown_s for t in metrics.word_timings(emissions)] == pytest.approx([1.0, 2.0])


def test_one_retraction_is_flicker_one_per_committed_word() -> None:
    assert metrics.count_retractions(ONE_RETRACTION) == 1
    assert metrics.flicker(1, 3) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("emissions", "retractions"),
    [
        pytest.param(ONE_RETRACTION, 1, id="changed-word"),
        pytest.param(
            [
                rev(1.0, 0, 0, (), (THE, CAT, w(" um", 0.9, 1.0))),
                rev(2.0, 0, 1, (THE, CAT), final=True),
            ],
            1,
            id="word-disappears",
        ),
        pytest.param(
            [
                rev(1.0, 0, 0, (), (w(" the", 0.0, 0.3), w(" cat", 0.3, 0.6))),
                rev(2.0, 0, 1, (THE, w(" Cat,", 0.3, 0.6)), final=True),
            ],
            0,
            id="case-and-punctuation-are-not-retractions",
        ),
        pytest.param(
            [
                rev(1.0, 0, 0, (), (THE,)),
                rev(1.2, 0, 1, (), (THE, CAT)),
                rev(1.4, 0, 2, (THE, CAT, SAT), final=True),
            ],
            0,
            id="growing-tail",
        ),
        pytest.param(
            [
                rev(1.0, 0, 0, (), (THE, CAP)),
                rev(1.2, 0, 1, (), (THE,)),  # cap gone: 1
                rev(1.4, 0, 2, (), (THE, CAP)),
                rev(1.6, 0, 3, (THE, CAT), final=True),  # cap changed again: 2
            ],
            2,
            id="retracted-twice",
        ),
        pytest.param(
            [
                rev(1.0, 0, 0, (), (THE, CAP)),
                rev(1.1, 1, 0, (), (w(" dog", 2.0, 2.3),)),  # another segment in between
                rev(1.2, 0, 1, (THE, CAT), final=True),  # 1
                rev(1.3, 1, 1, (w(" dog", 2.0, 2.3),), final=True),  # 0
            ],
            1,
            id="segments-are-separate",
        ),
        pytest.param(
            [rev(1.0, 0, 0, (THE,), (CAT,)), rev(1.5, 0, 1, (THE,), (CAT,))],
            0,
            id="repeated-revision",
        ),
    ],
)
def test_count_retractions(emissions: list[Emission], retractions: int) -> None:
    assert metrics.count_retractions(emissions) == retractions


def test_flicker_without_committed_words_is_undefined() -> None:
    assert metrics.flicker(0, 0) is None


def test_final_updates_and_text() -> None:
    emissions = [
        *ONE_RETRACTION,
        rev(3.0, 1, 0, (), (w(" Then", 1.0, 1.2),)),
        rev(3.5, 1, 1, (w(" Then", 1.0, 1.2), w(" it", 1.2, 1.3), w(" ran.", 1.3, 1.6)),
            final=True),
    ]
    assert [u.segment_id for u in metrics.final_updates(emissions)] == [0, 1]
    assert metrics.final_text(emissions) == "The cat sat. Then it ran."
    assert metrics.wer(["the cat sat then it ran"], [metrics.final_text(emissions)]) == 0.0
    assert len(metrics.word_timings(emissions)) == 6


def test_no_emissions() -> None:
    assert metrics.word_timings([]) == []
    assert metrics.count_retractions([]) == 0
    assert metrics.final_text([]) == ""


# ----------------------------------------------------------------- translation


def test_translation_latency_and_text() -> None:
    de = "Die Katze sass."
    emissions = [
        rev(1.0, 0, 0, (THE,), (CAT,), translations={"de": Translation("Die", "Katze")}),
        rev(2.0, 0, 1, (THE, CAT), (SAT,), translations={"de": Translation(de, "")}),
        rev(2.5, 0, 2, (THE, CAT, SAT), final=True, translations={"de": Translation(de)}),
    ]
    # final stable text first shown at 2.0; the segment's audio ended at 0.9
    assert metrics.translation_latencies(emissions, "de") == pytest.approx([1.1])
    assert metrics.translation_latencies(emissions, "es") == []
    assert metrics.final_translation(emissions, "de") == de
    assert metrics.final_translation(emissions, "es") is None


def test_bleu_and_chrf() -> None:
    refs = ["the cat sat on the mat", "a dog barked"]
    assert metrics.bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.chrf(refs, refs) == pytest.approx(100.0)
    assert metrics.chrf(refs, ["zzz", "qqq"]) == pytest.approx(0.0)
    assert metrics.bleu([], []) is None
    assert metrics.chrf([], []) is None


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    ("values_s", "expected"),
    [
        ([], None),
        ([0.25], Percentiles(250.0, 250.0)),
        ([0.1 * i for i in range(1, 11)], Percentiles(550.0, 910.0)),
        ([2.0, 1.0], Percentiles(1500.0, 1900.0)),
    ],
)
def test_percentiles(values_s: list[float], expected: Percentiles | None) -> None:
    got = metrics.percentiles_ms(values_s)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got.p50_ms == pytest.approx(expected.p50_ms)
        assert got.p90_ms == pytest.approx(expected.p90_ms)


def test_percentiles_json_rounds() -> None:
    assert Percentiles(1234.5678, 2000.04).as_json() == {"p50": 1234.6, "p90": 2000.0}


@pytest.mark.parametrize(
    ("times_s", "expected"),
    [
        ([-1.0, 0.0, 4.9, 5.0, 5.2, 12.0], [0, 0, 0, 1, 1, 2]),
        ([], []),
    ],
)
def test_assign_to_items(times_s: list[float], expected: list[int]) -> None:
    assert metrics.assign_to_items(times_s, [0.0, 5.0, 10.0]) == expected


def test_assign_to_no_items() -> None:
    with pytest.raises(ValueError, match="no items"):
        metrics.assign_to_items([1.0], [])


def test_the_standard_normaliser_counts_spellings_of_one_text_as_the_same() -> None:
    """Whisper's English normaliser, reported beside the simple one: numbers, titles,
    contractions and British spellings in one form."""
    references = ["In 1813, Mr. Smith couldn't colour the type."]
    hypotheses = ["in eighteen thirteen mister smith could not color the type"]
    assert metrics.word_errors(references, hypotheses, metrics.standard_normalise).errors == 0
    assert metrics.word_errors(references, hypotheses).errors >= 4
