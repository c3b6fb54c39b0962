"""Benchmark metrics: pure functions of transcripts and of the timed stream of revisions.

Nothing here runs a model, reads a clock or touches a file. The drivers record what the
pipeline emitted as `Emission`s (the time a revision reached the publish stage, on the
benchmark's clock, and the revision itself); everything below is computed from those.

Definitions (all times in seconds on the benchmark clock, whose 0 is the start of the
audio stream, so "audio time" and "clock time" are directly comparable):

- Text normalisation (WER and word comparisons): lower-case; every character other than
  a letter, a digit, an apostrophe and a space becomes a space; whitespace is collapsed.
  So "Hello, World!" and "hello world" are the same text; "don't" keeps its apostrophe;
  "forty-two" becomes two words "forty two". On English this is the normalisation of the
  shared data README (``a-z``, ``0-9``), used by every WER in the project; letters of
  other scripts are kept, so "großer" stays one word (it became "gro er" before).
- Standard normalisation (reported beside it): Whisper's English text normaliser
  (`whisper-normalizer`, the one the Open ASR Leaderboard uses): numbers, spellings,
  contractions and titles in one form, so "1813" and "eighteen thirteen" or "Mr." and
  "mister" count as the same.
- WER: corpus word error rate, (substitutions + deletions + insertions) / reference words,
  summed over all pairs (jiwer's alignment), of normalised texts.
- Committed latency of a word: the first time it appears in a revision's `committed` list,
  minus the audio time its speech ended (`Word.end_s`). Only words of final revisions count.
- Partial ("first shown") latency of a word: the time since which the word has been on
  screen without interruption when it is committed -- shown at the same segment and
  position with the same normalised text in every revision from then on -- minus its
  end time. A word shown, retracted and shown again counts from the second showing, so
  a coincidental earlier guess at that position does not count.
- Retraction: a word displayed as *partial* at some segment and position that a later
  revision of that segment shows with a different normalised text, or no longer shows.
  Flicker is retractions per committed word (of the final revisions).
- Translation latency (per target language): the first time a segment's translation
  showed its final stable text, minus the audio time the segment's last word ended.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from subtitled.errors import ConfigError, InvalidArgument
from subtitled.events import SegmentUpdate

_DROP = re.compile(r"[^\w' ]+|_")

NORMALISATION = (
    "lower-case; characters other than letters (of any script), digits, apostrophe and "
    "space become spaces; whitespace collapsed"
)
"""The text normalisation applied before WER and word comparisons, for reports."""


def normalise(text: str) -> str:
    """Lower-case, keep letters, digits, ``'`` and single spaces (see the module docstring)."""
    return " ".join(_DROP.sub(" ", text.lower()).split())


STANDARD_NORMALISATION = "Whisper's English text normaliser (whisper-normalizer)"


@cache
def _english_normaliser() -> Callable[[str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError as exc:  # the bench extra
        raise ConfigError(
            "the standard WER needs the whisper-normalizer package: "
            "pip install 'subtitled[bench]'"
        ) from exc
    normaliser: Callable[[str], str] = EnglishTextNormalizer()
    return normaliser


def standard_normalise(text: str) -> str:
    """Whisper's English normaliser (see the module docstring), single-spaced."""
    return " ".join(_english_normaliser()(text).split())


@dataclass(frozen=True)
class Emission:
    """One revision as it reached the publish stage, at `time_s` on the benchmark clock."""

    time_s: float
    update: SegmentUpdate


# ---------------------------------------------------------------------------- WER


@dataclass(frozen=True)
class WordErrors:
    """Word-level alignment counts of hypotheses against references (normalised)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float | None:
        """WER; None when there are no reference words (the rate is undefined)."""
        if self.reference_words == 0:
            return None
        return self.errors / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def word_errors(
    references: Sequence[str],
    hypotheses: Sequence[str],
    normaliser: Callable[[str], str] = normalise,
) -> WordErrors:
    """Align each hypothesis with its reference (jiwer) and sum the error counts, texts
    normalised by `normaliser` (`normalise`, or `standard_normalise`).

    A pair whose reference is empty after normalisation counts every hypothesis word as
    an insertion (jiwer refuses empty references).
    """
    if len(references) != len(hypotheses):
        raise InvalidArgument(
            f"{len(references)} references but {len(hypotheses)} hypotheses: they pair up"
        )
    refs = [normaliser(r) for r in references]
    hyps = [normaliser(h) for h in hypotheses]
    total = WordErrors(0, 0, 0, 0)
    scored_refs: list[str] = []
    scored_hyps: list[str] = []
    for ref, hyp in zip(refs, hyps, strict=True):
        if ref:
            scored_refs.append(ref)
            scored_hyps.append(hyp)
        else:
            total += WordErrors(0, 0, len(hyp.split()), 0)
    if scored_refs:
        import jiwer

        out = jiwer.process_words(scored_refs, scored_hyps)
        total += WordErrors(
            int(out.substitutions),
            int(out.deletions),
            int(out.insertions),
            sum(len(r.split()) for r in scored_refs),
        )
    return total


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus WER of normalised texts; None without reference words."""
    return word_errors(references, hypotheses).rate


# ----------------------------------------------------------------- BLEU and chrF


def bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus sacreBLEU (default tokenisation, one reference per segment), 0-100."""
    if not references:
        return None
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus sacreBLEU chrF (default settings), 0-100."""
    if not references:
        return None
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


# ------------------------------------------------------------ timing of words


@dataclass(frozen=True)
class WordTiming:
    """When one word of a final revision was shown and committed, against its audio."""

    segment_id: int
    index: int
    """Position in the segment's words."""
    text: str
    start_s: float
    end_s: float
    """Audio time the word's speech ended."""
    committed_s: float
    """Clock time the word first appeared in a `committed` list."""
    shown_s: float
    """Clock time since which the word had been displayed, uninterrupted, with its final
    (normalised) text when it was committed."""

    @property
    def latency_s(self) -> float:
        return self.committed_s - self.end_s

    @property
    def partial_latency_s(self) -> float:
        return self.shown_s - self.end_s


def final_updates(emissions: Sequence[Emission]) -> list[SegmentUpdate]:
    """The last final revision of every segment, in the order they were emitted."""
    finals: dict[int, SegmentUpdate] = {}
    for emission in emissions:
        if emission.update.status == "final":
            finals.pop(emission.update.segment_id, None)
            finals[emission.update.segment_id] = emission.update
    return list(finals.values())


def final_text(emissions: Sequence[Emission]) -> str:
    """The committed transcript: every final revision's text, in order."""
    return " ".join(u.committed_text for u in final_updates(emissions) if u.committed_text)


def word_timings(emissions: Sequence[Emission]) -> list[WordTiming]:
    """Timing of every committed word of the final revisions, in transcript order."""
    on_screen: dict[int, list[tuple[str, float]]] = {}  # per segment: (text, since) by index
    first_committed: dict[tuple[int, int], tuple[float, float]] = {}  # -> (committed, shown)
    for emission in emissions:
        update = emission.update
        before = on_screen.get(update.segment_id, [])
        now: list[tuple[str, float]] = []
        for i, word in enumerate(update.words):
            text = normalise(word.text)
            same = i < len(before) and before[i][0] == text
            now.append((text, before[i][1] if same else emission.time_s))
            if i < len(update.committed):
                first_committed.setdefault((update.segment_id, i), (emission.time_s, now[i][1]))
        on_screen[update.segment_id] = now
    timings: list[WordTiming] = []
    for final in final_updates(emissions):
        for i, word in enumerate(final.committed):
            committed_s, shown_s = first_committed[(final.segment_id, i)]
            timings.append(
                WordTiming(
                    segment_id=final.segment_id,
                    index=i,
                    text=word.text,
                    start_s=word.start_s,
                    end_s=word.end_s,
                    committed_s=committed_s,
                    shown_s=shown_s,
                )
            )
    return timings


def count_retractions(emissions: Sequence[Emission]) -> int:
    """Partial words that a later revision of their segment changed or removed."""
    shown: dict[int, SegmentUpdate] = {}
    retractions = 0
    for emission in emissions:
        update = emission.update
        previous = shown.get(update.segment_id)
        if previous is not None:
            for i in range(len(previous.committed), len(previous.words)):
                old = normalise(previous.words[i].text)
                if i >= len(update.words) or normalise(update.words[i].text) != old:
                    retractions += 1
        shown[update.segment_id] = update
    return retractions


def flicker(retractions: int, committed_words: int) -> float | None:
    """Retracted partial words per committed word; None without committed words."""
    if committed_words == 0:
        return None
    return retractions / committed_words


# ------------------------------------------------------- translation timing


def translation_latencies(emissions: Sequence[Emission], language: str) -> list[float]:
    """Per final segment with a translation into `language`: seconds from the end of its
    last word's audio to the first time its final stable translation was shown."""
    first_shown: dict[tuple[int, str], float] = {}
    for emission in emissions:
        translation = emission.update.translations.get(language)
        if translation is not None:
            key = (emission.update.segment_id, translation.stable.strip())
            first_shown.setdefault(key, emission.time_s)
    latencies: list[float] = []
    for final in final_updates(emissions):
        translation = final.translations.get(language)
        if translation is None or not translation.stable.strip() or not final.committed:
            continue
        shown_s = first_shown[(final.segment_id, translation.stable.strip())]
        latencies.append(shown_s - final.committed[-1].end_s)
    return latencies


def final_translation(emissions: Sequence[Emission], language: str) -> str | None:
    """The stable translation of every final revision, joined; None when none has one."""
    parts = [
        u.translations[language].stable.strip()
        for u in final_updates(emissions)
        if language in u.translations
    ]
    return " ".join(p for p in parts if p) if parts else None


# ----------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Percentiles:
    """Median and 90th percentile, in milliseconds."""

    p50_ms: float
    p90_ms: float

    def as_json(self) -> dict[str, float]:
        return {"p50": round(self.p50_ms, 1), "p90": round(self.p90_ms, 1)}


def percentiles_ms(values_s: Sequence[float]) -> Percentiles | None:
    """p50 and p90 (linear interpolation, numpy's default) of seconds, as ms; None if empty."""
    if not values_s:
        return None
    p50, p90 = np.percentile(np.asarray(values_s, dtype=np.float64), [50, 90])
    return Percentiles(float(p50) * 1000.0, float(p90) * 1000.0)


def assign_to_items(times_s: Sequence[float], item_starts_s: Sequence[float]) -> list[int]:
    """Index of the item each time falls in: the last item starting at or before it.

    `item_starts_s` must be ascending; a time before the first start goes to item 0.
    """
    if not item_starts_s:
        raise InvalidArgument("no items to assign to")
    return [max(bisect.bisect_right(item_starts_s, t) - 1, 0) for t in times_s]
