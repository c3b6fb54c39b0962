"""The translation stability policy, a pure core: what to force, what to show as stable.

Each update of the open sentence yields a hypothesis (a sequence of target tokens, or of
words for backends without token access). A prefix becomes *stable* once the last
`agreement` hypotheses agree on it (LocalAgreement, Polák et al. 2022, applied to the
target); stable output is forced as the start of every later hypothesis, so it is never
retracted. When ASR closes the sentence the whole final hypothesis becomes stable.

Also here: the length limit relative to the source, and the repetition guard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from subtitled.errors import InvalidArgument
from subtitled.translate.cache import common_prefix

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class DecodePolicy:
    """Decoding limits and the agreement rule."""

    agreement: int = 2
    """How many successive hypotheses must agree on a prefix for it to become stable."""
    length_ratio: float = 2.0
    """A translation holds at most length_ratio * source tokens + length_margin tokens."""
    length_margin: int = 8
    max_new_tokens: int = 256
    repeat_ngram: int = 4
    """The repetition guard looks at n-grams up to this length ..."""
    repeat_times: int = 3
    """... and cuts a hypothesis whose tail repeats one this many times in a row."""
    loop_span: int = 16
    """A run of this many tokens that the hypothesis already holds, anywhere, ends it
    there (a small model on a long sentence loops over whole phrases, which the n-gram
    rule does not see); 0 turns this off."""

    def __post_init__(self) -> None:
        if self.agreement < 1:
            raise InvalidArgument("agreement must be >= 1")
        if self.length_ratio <= 0 or self.length_margin < 0 or self.max_new_tokens < 1:
            raise InvalidArgument("length limits must be positive")
        if self.repeat_ngram < 1 or self.repeat_times < 2:
            raise InvalidArgument("repeat_ngram must be >= 1 and repeat_times >= 2")
        if self.loop_span < 0:
            raise InvalidArgument("loop_span must be >= 0")

    def cut_runaway(self, tokens: list[int], forced: int) -> bool:
        """Drop a repetition or loop at the end of `tokens` (never into the first `forced`,
        the stable prefix): True when it cut, and decoding ends there."""
        cut = repetition_cut(tokens, self.repeat_ngram, self.repeat_times)
        if cut is None:
            cut = loop_cut(tokens, self.loop_span)
        if cut is None or cut < forced:
            return False
        del tokens[cut:]
        return True

    def length_limit(self, source_tokens: int) -> int:
        """The most target tokens a sentence of `source_tokens` may get."""
        limit = math.ceil(self.length_ratio * source_tokens) + self.length_margin
        return min(limit, self.max_new_tokens)


CLAUSE_ENDS = (",", ";", ":", ".", "?", "!", "\u2026")
"""Word endings after which a long sentence may be cut."""


def clause_cut(words: Sequence[str], max_words: int, min_words: int = 4) -> int | None:
    """How many words of a long sentence form its first clause; None: translate it whole.

    A sentence of more than `max_words` words (0: no limit) is cut after the first word
    that ends in clause punctuation with at least `min_words` words on each side. Small
    models trained on short sentences stop early or wander on long ones but translate
    their clauses well (the bundled model on FLORES dev en->de, split above 12 words:
    chrF 13.7 -> 19.2). The cut depends only on words before it and on there being enough
    after it, so a sentence growing word by word is cut where the whole one is.
    """
    if max_words <= 0 or len(words) <= max_words:
        return None
    for end in range(min_words, len(words) - min_words + 1):
        if words[end - 1].endswith(CLAUSE_ENDS):
            return end
    return None


def repetition_cut(ids: Sequence[Hashable], max_ngram: int, times: int) -> int | None:
    """If `ids` ends with an n-gram (n <= max_ngram) repeated `times` times in a row,
    the length to cut to (keeping one occurrence); else None."""
    for n in range(1, max_ngram + 1):
        span = n * times
        if len(ids) < span:
            break
        tail = list(ids[-n:])
        if all(list(ids[len(ids) - k * n : len(ids) - (k - 1) * n]) == tail
               for k in range(2, times + 1)):
            return len(ids) - span + n
    return None


def loop_cut(ids: Sequence[Hashable], span: int) -> int | None:
    """If the last `span` ids already occur earlier in `ids`, the length to cut to (the
    repeat dropped); else None. `span` 0: never."""
    if span < 1 or len(ids) < 2 * span:
        return None
    tail = list(ids[-span:])
    for start in range(len(ids) - 2 * span, -1, -1):
        if list(ids[start : start + span]) == tail:
            return len(ids) - span
    return None


@dataclass(frozen=True)
class Verdict(Generic[T]):
    """After one hypothesis: the stable prefix, the unstable tail, and what just became
    stable."""

    stable: tuple[T, ...]
    unstable: tuple[T, ...]
    newly_stable: int
    final: bool


class StabilityPolicy(Generic[T]):
    """LocalAgreement over the target of one open sentence."""

    def __init__(self, agreement: int = 2) -> None:
        self.agreement = agreement
        self.stable: tuple[T, ...] = ()
        self._recent: deque[tuple[T, ...]] = deque(maxlen=max(agreement - 1, 1))
        self.closed = False

    @property
    def forced(self) -> tuple[T, ...]:
        """What the next hypothesis must start with."""
        return self.stable

    @property
    def draft(self) -> tuple[T, ...]:
        """The last hypothesis after the stable prefix: a cheap guess at the next one."""
        if not self._recent:
            return ()
        last = self._recent[-1]
        if last[: len(self.stable)] != self.stable:
            return ()
        return last[len(self.stable) :]

    def update(self, hypothesis: Sequence[T], final: bool) -> Verdict[T]:
        """Take a new hypothesis; `final` when ASR closed the sentence."""
        if self.closed:
            raise InvalidArgument("the sentence is already final")
        hyp = tuple(hypothesis)
        before = len(self.stable)
        if hyp[:before] != self.stable:
            # A backend that cannot force the prefix diverged from it: keep what was
            # shown, show only the new hypothesis' words beyond it as unstable.
            unstable = hyp[before:] if len(hyp) > before else ()
            if final:
                self.closed = True
            self._recent.append(self.stable + unstable)
            return Verdict(self.stable, unstable, 0, final)
        if final or self.agreement == 1:
            self.stable = hyp
        else:
            agreed = len(hyp)
            window = list(self._recent)[-(self.agreement - 1) :]
            if len(window) < self.agreement - 1:
                agreed = before
            for other in window:
                agreed = min(agreed, common_prefix(other, hyp))
            if agreed > before:
                self.stable = hyp[:agreed]
        self._recent.append(hyp)
        self.closed = final
        return Verdict(self.stable, hyp[len(self.stable) :], len(self.stable) - before, final)


class StableText:
    """The stable translation as shown: text that only grows.

    Decoding a token prefix is not always a prefix of decoding more tokens (a multi-byte
    character split across tokens decodes to U+FFFD until its last byte arrives; some
    decoders drop a leading space). Text is shown only when it extends what was shown.
    """

    def __init__(self) -> None:
        self.text = ""

    def offer(self, text: str) -> str:
        text = text.rstrip("\ufffd")
        if text.startswith(self.text):
            self.text = text
        return self.text
