"""CommitPolicy, the pure LocalAgreement-2 core: synchronous, hand-made hypotheses."""

from __future__ import annotations

from itertools import pairwise

import pytest

from subtitled.asr.policy import CommitPolicy, PolicyConfig, ends_sentence, normalise_word
from subtitled.errors import ConfigError
from subtitled.events import SegmentUpdate, Word

NOW = 1_000.0
WORD_S = 0.5
"""Each hand-made word lasts 0.4 s, then 0.1 s of gap."""
NO_FIRST_WAIT = PolicyConfig(first_context_s=0.0)
"""For tests of other rules that start agreeing on a fresh buffer's first words at once
(the first-word wait has its own tests)."""


def ws(text: str, start_s: float = 0.0) -> list[Word]:
    """Words from space-separated tokens, WORD_S apart, with Whisper's leading space."""
    return [
        Word(" " + token, start_s + WORD_S * i, start_s + WORD_S * i + 0.4)
        for i, token in enumerate(text.split())
    ]


def texts(words: tuple[Word, ...] | list[Word]) -> str:
    return "".join(w.text for w in words).strip()


def finals(updates: list[SegmentUpdate]) -> list[str]:
    return [u.committed_text for u in updates if u.status == "final"]


def feed(policy: CommitPolicy, transcript: str, buffer_end_s: float) -> list[SegmentUpdate]:
    """One step: Whisper heard `transcript` from the buffer start to `buffer_end_s`."""
    heard = ws(transcript, policy.buffer_start_s)
    prefix = policy.prefix_words
    return policy.on_hypothesis(heard[len(prefix) :], buffer_end_s, NOW + buffer_end_s)


def committed(updates: list[SegmentUpdate]) -> str:
    """The committed text of the open segment after these updates."""
    partials = [u for u in updates if u.status == "partial"]
    return partials[-1].committed_text if partials else ""


# Helpers of the core.


@pytest.mark.parametrize(
    ("text", "key"),
    [(" Hello,", "hello"), (" don't", "don't"), (" U.S.", "us"), (" fifty-five", "fiftyfive")],
)
def test_normalise_word(text: str, key: str) -> None:
    assert normalise_word(text) == key


@pytest.mark.parametrize(
    ("text", "closes"),
    [
        (" crafts.", True),
        (" why?", True),
        (" now!", True),
        (' "yes."', True),
        (" I.", True),
        (" crafts", False),
        (" crafts,", False),
        (" that...", False),  # Whisper's mark for speech running on past the audio
        (" wait…", False),
        (" Mr.", False),
        (" Dr.", False),
        (" e.g.", False),
        (" J.", False),  # an initial
    ],
)
def test_ends_sentence(text: str, closes: bool) -> None:
    assert ends_sentence(Word(text, 0.0, 0.4)) is closes


# LocalAgreement-2.


@pytest.mark.parametrize(
    ("first", "second", "agreed"),
    [
        ("we are at", "we are at present", "we are at"),
        ("we are at", "we were at present", "we"),
        ("we are at", "they are at present", ""),
        # Compared lower-case without punctuation; the newer hypothesis's text is kept.
        ("Printing, in", "printing in the only", "printing in"),
        ("one two three four", "one two", "one two"),
    ],
)
def test_two_hypotheses_commit_their_common_prefix(first: str, second: str, agreed: str) -> None:
    policy = CommitPolicy()
    feed(policy, first, buffer_end_s=3.0)
    updates = feed(policy, second, buffer_end_s=3.5)
    assert committed(updates) == agreed
    assert texts(policy.prefix_words) == agreed


def test_first_hypothesis_is_shown_as_partial_and_commits_nothing() -> None:
    policy = CommitPolicy()
    (update,) = feed(policy, "we are at", 3.0)
    assert update.status == "partial"
    assert update.committed == ()
    assert texts(update.partial) == "we are at"


def test_a_word_heard_at_the_very_end_of_the_audio_waits_for_more() -> None:
    """'wood' at the end of one hypothesis and the start of the next is not agreement:
    the audio may have cut 'woodcutters' short."""
    policy = CommitPolicy(PolicyConfig(cut_margin_s=0.1, first_context_s=0.0))
    feed(policy, "before the wood", buffer_end_s=1.45)  # "wood" ends at 1.4
    updates = feed(policy, "before the wood cutters", buffer_end_s=2.0)
    assert committed(updates) == "before the"
    updates = feed(policy, "before the woodcutters of", buffer_end_s=2.5)
    assert committed(updates) == "before the"
    updates = feed(policy, "before the woodcutters of the", buffer_end_s=3.0)
    assert committed(updates) == "before the woodcutters of"


def test_first_words_of_a_fresh_buffer_wait_for_a_second_of_audio_after_them() -> None:
    """Guessed from the first half second, "the air" agrees with itself as readily as
    "their": the first words wait until a hypothesis heard 1 s past them."""
    waiting = CommitPolicy(PolicyConfig(first_context_s=1.0))
    eager = CommitPolicy(NO_FIRST_WAIT)
    for policy in (waiting, eager):
        feed(policy, "their type", buffer_end_s=1.2)
    assert committed(feed(eager, "their type is", buffer_end_s=1.7)) == "their type"
    assert committed(feed(waiting, "their type is", buffer_end_s=1.7)) == ""
    # "their" ended at 0.4, 1.3 s before the end of the 1.7 s hypothesis: agreed
    assert committed(feed(waiting, "their type is on", buffer_end_s=2.2)) == "their"
    # once a word anchors the buffer, the usual margin applies
    assert committed(feed(waiting, "their type is on the", buffer_end_s=2.7)) == "their type is on"


def test_the_first_word_wait_ends_with_the_pause() -> None:
    """A short utterance that ends before a second of audio follows it still commits
    whole at the pause."""
    policy = CommitPolicy(PolicyConfig(first_context_s=1.0))
    feed(policy, "yes", buffer_end_s=0.6)
    assert committed(feed(policy, "yes", buffer_end_s=1.0)) == ""
    assert finals(policy.on_pause(ws("yes"), pause_start_s=0.5, now_unix=NOW)) == ["yes"]


def test_revisions_never_change_committed_words() -> None:
    policy = CommitPolicy()
    feed(policy, "the art of", 2.0)
    feed(policy, "the art of printing", 2.5)
    seen: list[SegmentUpdate] = []
    for transcript, end_s in [
        ("the art of printing then", 3.0),  # agrees
        ("the heart of printing then for", 3.5),  # disagrees with committed words
        ("a cart of printing then for our", 4.0),
        ("the art of printing then for our purpose", 4.5),
    ]:
        seen += feed(policy, transcript, end_s)
    for before, later in pairwise(seen):
        assert later.committed[: len(before.committed)] == before.committed
    assert texts(seen[-1].committed).startswith("the art of")


# Sentence ends.


def test_sentence_end_closes_the_segment_and_trims_the_buffer() -> None:
    policy = CommitPolicy(NO_FIRST_WAIT)
    feed(policy, "it is done. the next", 3.0)
    updates = feed(policy, "it is done. the next one", 3.5)
    assert finals(updates) == ["it is done."]
    (partial,) = [u for u in updates if u.status == "partial"]
    assert partial.segment_id == updates[0].segment_id + 1
    assert texts(partial.committed) == "the next"
    # The buffer now starts at the closing word, which stays as the forced prefix.
    done = ws("it is done.")[-1]
    assert policy.buffer_start_s == done.start_s
    assert texts(policy.prefix_words) == "done. the next"
    assert policy.context(200) == "it is"


def test_a_period_on_the_last_word_waits_for_words_after_it() -> None:
    """Whisper ends a sentence wherever the buffer ends: 'crafts.' twice at the end of
    the audio is no sentence end."""
    policy = CommitPolicy()
    feed(policy, "arts and crafts.", 2.0)
    updates = feed(policy, "arts and crafts.", 2.5)
    assert finals(updates) == []
    assert committed(updates) == "arts and"
    assert texts(policy.pending_words) == "crafts."
    # The speaker goes on: "crafts" is agreed, without the period, and nothing closes.
    updates = feed(policy, "arts and crafts represented in", 3.0)
    assert finals(updates) == []
    assert committed(updates) == "arts and crafts"
    # A real sentence end: more words follow the period, so it closes.
    feed(policy, "arts and crafts represented in it. then", 4.0)
    updates = feed(policy, "arts and crafts represented in it. then more", 4.5)
    assert finals(updates) == ["arts and crafts represented in it."]


@pytest.mark.parametrize("word", ["Mr.", "that..."])
def test_abbreviations_and_ellipses_do_not_close(word: str) -> None:
    policy = CommitPolicy()
    feed(policy, f"and {word} John said", 3.0)
    updates = feed(policy, f"and {word} John said so", 3.5)
    assert finals(updates) == []
    assert committed(updates) == f"and {word} John said"


def test_a_long_segment_is_closed_after_max_segment_words() -> None:
    policy = CommitPolicy(PolicyConfig(max_segment_words=4, first_context_s=0.0))
    feed(policy, "one two three four five six", 3.5)
    updates = feed(policy, "one two three four five six seven", 4.0)
    assert finals(updates) == ["one two three four"]
    assert committed(updates) == "five six"


# Pauses, silence, the end of the stream.


def test_pause_commits_everything_and_closes() -> None:
    policy = CommitPolicy()
    feed(policy, "ask not what", 1.5)
    heard = ws("ask not what your country")
    updates = policy.on_pause(heard, pause_start_s=2.4, now_unix=NOW)
    assert finals(updates) == ["ask not what your country"]
    assert policy.buffer_start_s == 2.4
    assert policy.prefix_words == ()
    assert policy.pending_words == ()
    assert not policy.segment_open
    assert policy.context(200) == "ask not what your country"


def test_pause_after_everything_was_agreed_closes_with_no_new_words() -> None:
    policy = CommitPolicy(NO_FIRST_WAIT)
    feed(policy, "yes it is. and", 2.5)
    feed(policy, "yes it is. and so", 3.0)
    assert policy.segment_open
    updates = policy.on_pause([], pause_start_s=3.0, now_unix=NOW)
    assert finals(updates) == ["and"]
    assert not policy.segment_open


def test_silence_moves_the_buffer_start_only_when_nothing_is_pending() -> None:
    policy = CommitPolicy()
    feed(policy, "hello there", 1.5)
    policy.on_silence(5.0)
    assert policy.buffer_start_s == 0.0  # "hello there" is still pending
    policy.on_pause(ws("hello there"), pause_start_s=1.0, now_unix=NOW)
    policy.on_silence(5.0)
    assert policy.buffer_start_s == 5.0
    policy.on_silence(3.0)
    assert policy.buffer_start_s == 5.0  # never backwards


def test_finish_commits_the_pending_tail_as_it_stands() -> None:
    policy = CommitPolicy()
    feed(policy, "and so my fellow", 2.5)
    feed(policy, "and so my fellow Americans.", 3.0)
    updates = policy.finish(NOW)
    assert finals(updates) == ["and so my fellow Americans."]
    assert policy.finish(NOW) == []


# A buffer that grows past max_buffer_s.


def test_forced_commit_past_max_buffer_when_whisper_never_agrees() -> None:
    config = PolicyConfig(max_buffer_s=4.0, force_commit_margin_s=1.5)
    policy = CommitPolicy(config)
    feed(policy, "alpha beta gamma delta epsilon", 2.5)
    feed(policy, "one two three four five six seven eight", 4.0)
    updates = feed(policy, "uno dos tres cuatro cinco seis siete ocho nueve", 4.5)
    # Over 4 s with nothing agreed: words ending 1.5 s before the end are committed.
    assert committed(updates) == "uno dos tres cuatro cinco seis"
    assert texts(policy.pending_words) == "siete ocho nueve"
    # ...and the buffer is trimmed to the last of them, kept as the forced prefix.
    assert texts(policy.prefix_words) == "seis"
    assert policy.buffer_start_s == ws("uno dos tres cuatro cinco seis")[-1].start_s


def test_mid_sentence_trim_keeps_the_sentence_start_as_prompt_context() -> None:
    policy = CommitPolicy(PolicyConfig(max_buffer_s=3.0, first_context_s=0.0))
    feed(policy, "printing then for our purpose", 2.6)
    feed(policy, "printing then for our purpose may", 3.1)
    assert policy.buffer_start_s > 0.0
    assert policy.context(200) == "printing then for our"
    assert policy.context(8) == "for our"


def test_audio_without_any_words_is_dropped_past_max_buffer() -> None:
    policy = CommitPolicy(PolicyConfig(max_buffer_s=4.0, force_commit_margin_s=1.5))
    for end_s in (3.0, 4.0, 5.0):
        policy.on_hypothesis([], end_s, NOW)
    assert policy.buffer_start_s == 3.5
    assert policy.prefix_words == ()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"max_buffer_s": 29.5}, "streaming.policy.max_buffer_s"),
        ({"max_buffer_s": 0.5}, "streaming.policy.max_buffer_s"),
        ({"force_commit_margin_s": -1.0}, "streaming.policy.force_commit_margin_s"),
        ({"max_buffer_s": 4.0, "force_commit_margin_s": 4.0}, "force_commit_margin_s"),
        ({"cut_margin_s": -0.1}, "streaming.policy.cut_margin_s"),
        ({"first_context_s": -1.0}, "streaming.policy.first_context_s"),
        ({"max_segment_words": 0}, "streaming.policy.max_segment_words"),
    ],
)
def test_config_is_validated_with_the_key_named(settings: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        PolicyConfig(**settings)  # type: ignore[arg-type]


# Whisper's translate task: words that do not follow the audio (re-translation).


def test_a_translation_is_shown_whole_and_committed_at_the_pause() -> None:
    """Two hypotheses agree on "if you have seen": transcribing, that would commit; a
    translation keeps the utterance as the unstable tail until the speaker pauses, then
    commits the closing translation whole, with no trim at a word time before that."""
    policy = CommitPolicy(NO_FIRST_WAIT)
    policy.aligned = False
    feed(policy, "if you have seen the film", 3.5)
    updates = feed(policy, "if you have seen the film National Treasure,", 4.5)
    assert committed(updates) == ""
    assert texts(updates[-1].partial) == "if you have seen the film National Treasure,"
    feed(policy, "if you have seen National Treasure. you may think", 6.0)
    assert policy.buffer_start_s == 0.0 and policy.prefix_words == ()
    closing = ws("if you have seen National Treasure, you may think a map was written.")
    updates = policy.on_pause(closing, pause_start_s=7.0, now_unix=NOW)
    assert finals(updates) == [
        "if you have seen National Treasure, you may think a map was written."
    ]
    assert policy.buffer_start_s == 7.0


def test_translation_by_agreement_commits_the_agreed_prefix_and_keeps_the_audio() -> None:
    """With translation_commit = "agreement", what two re-translations agree on is
    committed and force-decoded from then on; the audio stays whole (no trim at a guessed
    word time) until the pause, which commits the rest."""
    policy = CommitPolicy(PolicyConfig(first_context_s=0.0, translation_commit="agreement"))
    policy.aligned = False
    feed(policy, "if you have seen the film", 3.5)
    updates = feed(policy, "if you have seen the movie National Treasure,", 4.5)
    assert committed(updates) == "if you have seen the"
    assert texts(policy.prefix_words) == "if you have seen the"
    assert texts(updates[-1].partial) == "movie National Treasure,"
    updates = feed(policy, "if you have seen the movie National Treasure, you may", 6.0)
    assert committed(updates) == "if you have seen the movie National Treasure,"
    assert policy.buffer_start_s == 0.0
    closing = ws("you may think a map was written.", 4.0)
    updates = policy.on_pause(closing, pause_start_s=7.0, now_unix=NOW)
    assert finals(updates) == [
        "if you have seen the movie National Treasure, you may think a map was written."
    ]
    assert policy.buffer_start_s == 7.0 and policy.prefix_words == ()


def test_translation_commit_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"streaming\.policy\.translation_commit"):
        PolicyConfig(translation_commit="never")


def test_translated_words_timed_before_the_committed_end_are_kept() -> None:
    """Translated words' times are guesses: one timed inside audio already committed is
    no repeat of it, so it is not filtered out as it is when transcribing."""
    policy = CommitPolicy(PolicyConfig(max_buffer_s=4.0, force_commit_margin_s=1.5))
    policy.aligned = False
    feed(policy, "one two three four five six seven", 3.5)
    feed(policy, "uno dos tres cuatro cinco seis siete ocho nueve", 4.5)  # forced out
    assert policy.prefix_words
    early = [Word(" late", 0.1, 0.3), Word(" words.", 0.3, 0.5)]
    updates = policy.on_pause(early, pause_start_s=5.0, now_unix=NOW)
    assert finals(updates)[-1].endswith("late words.")
