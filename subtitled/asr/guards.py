"""Guards against Whisper's known failure modes. Pure functions over word lists.

- Repetition loops: the decoder falls into a cycle and repeats a phrase until it runs
  out of tokens ("represented in the exhibition, represented in the exhibition, ...").
  We keep the first occurrence and drop the repeats, and a last repeat the token cap
  cut short (openai/whisper's compression ratio check catches the same thing on whole
  segments; we need it per word). A phrase of three or more words is a loop as soon as
  it comes twice; the forced prefix is searched too, since a loop often starts in it.
- Echoes: when the audio runs out, Whisper re-reads the buffer from its start (a tail
  that repeats an earlier run of the hypothesis), and a fresh buffer with little
  speech in it may recite the previous-text prompt. Both are dropped from four words.
- Hallucinations on silence or noise: phrases from YouTube subtitle credits that
  Whisper emits when there is no speech ("Thank you for watching"). They are dropped
  when the evidence for speech is weak: Whisper's own no-speech probability, or a
  VAD that heard little speech under the words.
"""

from __future__ import annotations

from collections.abc import Sequence

from subtitled.asr.policy import normalise_word
from subtitled.events import Word

MIN_REPEATS = 3
"""A two-word phrase seen this many times in a row is a loop."""
MIN_LONG_PHRASE_WORDS = 3
"""A phrase this long is a loop as soon as it repeats once: people rarely say three
words twice in a row, and Whisper does it whenever the audio runs out."""
MIN_SINGLE_WORD_REPEATS = 5
"""A single word needs more: "no, no, no" is ordinary speech."""

# Phrases Whisper is documented to produce on non-speech audio (openai/whisper
# discussions #679 and #928; faster-whisper issue #71). Compared after normalise_word.
HALLUCINATIONS: tuple[tuple[str, ...], ...] = tuple(
    tuple(phrase.split())
    for phrase in (
        "thank you for watching",
        "thanks for watching",
        "thank you so much for watching",
        "thank you very much for watching",
        "please subscribe",
        "please subscribe to my channel",
        "like and subscribe",
        "don't forget to like and subscribe",
        "subtitles by the amara org community",
        "subtitles by",
        "transcribed by",
        "see you in the next video",
        "see you next time",
        "thank you",
        "thanks",
        "bye",
        "you",
    )
)


def drop_repetition_loops(
    words: Sequence[Word], context: Sequence[Word] = (), max_phrase_words: int = 8
) -> list[Word]:
    """Keep one occurrence of any phrase (up to `max_phrase_words`) repeated in a loop.

    `context` is the forced prefix the words continue: a loop often starts inside it
    ("... printing then for | our purpose printing then for our purpose ..."). Only
    `words` are ever dropped.
    """
    out = [*context, *words]
    keys = [normalise_word(w.text) for w in out]
    protected = len(context)
    i = 0
    while i < len(keys):
        for n in range(1, max_phrase_words + 1):
            phrase = keys[i : i + n]
            if len(phrase) < n or not all(phrase):
                break
            repeats = 1
            while keys[i + repeats * n : i + (repeats + 1) * n] == phrase:
                repeats += 1
            end = i + repeats * n
            if repeats < _min_repeats(n) or end <= protected:
                continue
            if _is_cut_repeat(keys[end:], phrase):
                end = len(keys)
            first = max(i + n, protected)
            del out[first:end]
            del keys[first:end]
            break
        i += 1
    return out[protected:]


def _is_cut_repeat(rest: list[str], phrase: list[str]) -> bool:
    """True when `rest` is the start of one more repeat, cut off by the length cap
    (the last word possibly mid-token: "our pur")."""
    if not rest or len(rest) > len(phrase):
        return False
    *whole, last = rest
    return whole == phrase[: len(whole)] and phrase[len(whole)].startswith(last)


def _min_repeats(phrase_words: int) -> int:
    if phrase_words == 1:
        return MIN_SINGLE_WORD_REPEATS
    if phrase_words < MIN_LONG_PHRASE_WORDS:
        return MIN_REPEATS
    return 2


def is_hallucination(words: Sequence[Word], speech_ratio: float, no_speech_prob: float) -> bool:
    """True when `words` is a known non-speech phrase and the audio evidence is weak."""
    keys = tuple(k for k in (normalise_word(w.text) for w in words) if k)
    if not keys:
        return False
    weak = speech_ratio < 0.5 or no_speech_prob > 0.5
    return weak and keys in HALLUCINATIONS


ECHO_MIN_WORDS = 4
"""A hypothesis that opens with this many words of the prompt is echoing it."""


def drop_context_echo(words: Sequence[Word], context: str) -> list[Word]:
    """Drop an opening run of words that repeats the previous-text prompt.

    Whisper conditioned on earlier text sometimes "continues" a short or silent buffer
    by reciting that text again (the end of a file, a breath after a sentence). A new
    hypothesis whose first `ECHO_MIN_WORDS`+ words occur, in order, inside the prompt
    is such an echo: those words were already committed.
    """
    if len(words) < ECHO_MIN_WORDS or not context:
        return list(words)
    keys = [normalise_word(w.text) for w in words]
    recent = [k for k in (normalise_word(t) for t in context.split()) if k]
    best = 0
    for start in range(len(recent)):
        n = 0
        while start + n < len(recent) and n < len(keys) and recent[start + n] == keys[n]:
            n += 1
        best = max(best, n)
    return list(words[best:]) if best >= ECHO_MIN_WORDS else list(words)


def drop_trailing_echo(words: Sequence[Word], context: Sequence[Word] = ()) -> list[Word]:
    """Drop a tail that re-reads an earlier run of the same hypothesis.

    When the audio runs out, Whisper often starts the buffer's text over and is cut by
    the length cap: "... side by side with the gothic. The Roman letter was used side
    by side with". A tail of `ECHO_MIN_WORDS`+ words that equals an earlier run of the
    hypothesis (or of the forced prefix before it) is such a re-reading.
    """
    keys = [normalise_word(w.text) for w in [*context, *words]]
    start = len(context)
    for tail_start in range(start, len(keys) - ECHO_MIN_WORDS + 1):
        tail = keys[tail_start:]
        k = len(tail)
        if not all(tail):
            continue
        for j in range(0, tail_start - k + 1):
            if keys[j : j + k] == tail:
                return list(words[: tail_start - start])
    return list(words)
