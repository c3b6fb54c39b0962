"""The stability policy, the repetition guard, the length limit, the conversation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from subtitled.translate.policy import (
    DecodePolicy,
    StabilityPolicy,
    StableText,
    clause_cut,
    loop_cut,
    repetition_cut,
)
from subtitled.translate.prompt import Conversation


@pytest.mark.parametrize(
    ("agreement", "hypotheses", "stables"),
    [
        (2, ["ab", "abc", "abcd"], ["", "ab", "abc"]),
        (2, ["ab", "xy", "xyz"], ["", "", "xy"]),
        (3, ["abc", "abd", "abe"], ["", "", "ab"]),
        (1, ["ab", "abc"], ["ab", "abc"]),
    ],
)
def test_local_agreement(agreement: int, hypotheses: list[str], stables: list[str]) -> None:
    policy: StabilityPolicy[str] = StabilityPolicy(agreement)
    for hypothesis, expected in zip(hypotheses, stables, strict=True):
        hyp = policy.forced + tuple(hypothesis[len(policy.forced):])
        verdict = policy.update(hyp, final=False)
        assert "".join(verdict.stable) == expected
        assert "".join(verdict.stable + verdict.unstable) == hypothesis


def test_final_makes_everything_stable_and_closes() -> None:
    policy: StabilityPolicy[int] = StabilityPolicy(2)
    policy.update((1, 2), False)
    verdict = policy.update((1, 2, 3), True)
    assert verdict.stable == (1, 2, 3) and verdict.unstable == ()
    with pytest.raises(ValueError):
        policy.update((1,), False)


def test_draft_is_the_last_tail() -> None:
    policy: StabilityPolicy[int] = StabilityPolicy(2)
    policy.update((1, 2, 3), False)
    policy.update((1, 2, 4, 5), False)
    assert policy.forced == (1, 2)
    assert policy.draft == (4, 5)


@given(st.lists(st.tuples(st.lists(st.integers(0, 3), max_size=8), st.booleans()),
                min_size=1, max_size=30),
       st.integers(1, 3))
def test_stable_is_never_retracted(
    steps: list[tuple[list[int], bool]], agreement: int
) -> None:
    """Whatever hypotheses arrive (forced prefix honoured or not), the stable output only
    grows, and the shown text only grows."""
    policy: StabilityPolicy[int] = StabilityPolicy(agreement)
    shown = StableText()
    before: tuple[int, ...] = ()
    text = ""
    for tail, honour in steps:
        hyp = (policy.forced if honour else ()) + tuple(tail)
        verdict = policy.update(hyp, final=False)
        assert verdict.stable[: len(before)] == before
        before = verdict.stable
        new_text = shown.offer("".join(f"w{t} " for t in verdict.stable))
        assert new_text.startswith(text)
        text = new_text


@given(st.lists(st.text(alphabet="ab\ufffd ", max_size=6), max_size=20))
def test_stable_text_only_grows(offers: list[str]) -> None:
    shown, last = StableText(), ""
    for text in offers:
        now = shown.offer(text)
        assert now.startswith(last) and not now.endswith("\ufffd")
        last = now


@pytest.mark.parametrize(
    ("ids", "cut"),
    [
        ((1, 2, 3), None),
        ((5, 5, 5), 1),  # one token three times
        ((1, 7, 8, 7, 8, 7, 8), 3),  # a bigram three times
        ((7, 8, 7, 8), None),  # twice is allowed
        ((1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4), 4),
    ],
)
def test_repetition_guard(ids: tuple[int, ...], cut: int | None) -> None:
    assert repetition_cut(ids, 4, 3) == cut


LOOP = (10, 11, 12, 13, 14, 15, 16, 17)  # an 8-token phrase


@pytest.mark.parametrize(
    ("ids", "cut"),
    [
        ((1, 2, *LOOP), None),
        ((*LOOP, *LOOP), 8),  # the phrase again, straight after
        ((1, *LOOP, 2, 3, 4, *LOOP), 12),  # again after other words: cut back to before it
        ((*LOOP, 2, *LOOP[:7]), None),  # 7 of 8 tokens again is not a loop yet
        ((*LOOP[:6], *LOOP), None),  # overlapping starts are not a repeat of the tail
    ],
)
def test_loop_guard(ids: tuple[int, ...], cut: int | None) -> None:
    assert loop_cut(ids, 8) == cut
    assert loop_cut(ids, 0) is None  # off


def test_length_limit_is_relative_to_the_source() -> None:
    config = DecodePolicy(length_ratio=2.0, length_margin=8, max_new_tokens=100)
    assert config.length_limit(10) == 28
    assert config.length_limit(1000) == 100
    with pytest.raises(ValueError):
        DecodePolicy(agreement=0)


def test_conversation_evicts_oldest_pairs_at_once() -> None:
    conv = Conversation(preamble=(0,), target_end=(9,), budget_tokens=40, low_water=0.5)
    lengths = []
    for i in range(8):  # each pair: 3 + 2 + 1 = 6 tokens
        prompt = conv.prompt((i, i, i), room=4)
        lengths.append(len(prompt))
        assert len(prompt) + 4 <= 40
        conv.finish((i, i, i), (i, i))
    assert conv.evictions == 1
    # One eviction brought the prompt plus its room down to half the budget.
    assert lengths == [4, 10, 16, 22, 28, 34, 16, 22]
    assert conv.context()[0] == 0 and conv.pairs[-1].turn == (7, 7, 7)


LONG = (
    "in the year fourteen fifty five, the printers of Mainz, who had learned the craft, "
    "set up presses"
)


@pytest.mark.parametrize(
    ("words", "max_words", "cut"),
    [
        (LONG, 0, None),  # no limit
        (LONG, len(LONG.split()), None),  # not longer than the limit
        (LONG, 12, 6),  # after "five," (6 words before, plenty after)
        ("one two three, four five six seven eight nine ten", 5, None),  # 3 before
        ("one two three four, five six seven", 5, None),  # 3 after
        ("one two three four, five six seven eight", 5, 4),
        ("one two three four; five six seven eight", 5, 4),
        ("one two three four. Five six seven eight", 5, 4),
        ("one two three four five six seven eight", 5, None),  # nowhere to cut
    ],
)
def test_clause_cut(words: str, max_words: int, cut: int | None) -> None:
    assert clause_cut(words.split(), max_words) == cut


@given(st.lists(st.sampled_from(["a", "b,", "c", "d.", "e", "f;"]), max_size=40),
       st.integers(min_value=1, max_value=12))
def test_a_growing_sentence_is_cut_where_the_whole_one_is(words: list[str], limit: int) -> None:
    """Streaming (word by word) and one-shot translation split a sentence alike."""

    def cuts(sentence: list[str], streaming: bool) -> list[int]:
        found, start = [], 0
        for end in range(len(sentence) + 1) if streaming else [len(sentence)]:
            while (cut := clause_cut(sentence[start:end], limit)) is not None:
                start += cut
                found.append(start)
        return found

    assert cuts(words, streaming=True) == cuts(words, streaming=False)
