"""The rolling conversation a translation prompt is made of, as token ids (a pure core).

    preamble | turn(s1) t1 end | turn(s2) t2 end | ... | turn(open source) [forced target]

Each piece is encoded on its own and the ids are joined, so finished pairs never change
when the open sentence grows and their KV cache stays valid. Finished sentences stay as
context for the next. When the prompt plus the room needed to decode would pass the
context budget, the oldest pairs are dropped down to `low_water` of the budget at once:
one re-prefill (the cache diverges right after the preamble), amortised over the many
updates until the budget is reached again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from subtitled.errors import InvalidArgument


@dataclass(frozen=True)
class Pair:
    """A finished sentence: its source turn's ids and its translation's ids."""

    turn: tuple[int, ...]
    target: tuple[int, ...]


class Conversation:
    """Finished pairs kept as context, and the prompt for the open sentence."""

    def __init__(
        self,
        preamble: tuple[int, ...],
        target_end: tuple[int, ...],
        budget_tokens: int,
        low_water: float = 0.5,
    ) -> None:
        if budget_tokens <= len(preamble):
            raise InvalidArgument("the context budget must exceed the preamble")
        if not 0.0 < low_water <= 1.0:
            raise InvalidArgument("low_water must be in (0, 1]")
        self.preamble = preamble
        self.target_end = target_end
        self.budget_tokens = budget_tokens
        self.low_water = low_water
        self.pairs: deque[Pair] = deque()
        self.evictions = 0
        self._context_len = len(preamble)

    def _pair_len(self, pair: Pair) -> int:
        return len(pair.turn) + len(pair.target) + len(self.target_end)

    def context(self) -> tuple[int, ...]:
        ids = list(self.preamble)
        for pair in self.pairs:
            ids += pair.turn + pair.target + self.target_end
        return tuple(ids)

    def prompt(self, turn: tuple[int, ...], room: int) -> tuple[int, ...]:
        """The prompt for the open sentence `turn`, with `room` tokens left to decode.

        Evicts the oldest pairs first if the budget would be passed.
        """
        if self._context_len + len(turn) + room > self.budget_tokens and self.pairs:
            target = self.low_water * self.budget_tokens - len(turn) - room
            while self.pairs and self._context_len > max(target, len(self.preamble)):
                self._context_len -= self._pair_len(self.pairs.popleft())
            self.evictions += 1
        return self.context() + turn

    def finish(self, turn: tuple[int, ...], target: tuple[int, ...]) -> None:
        """Keep a finished sentence and its translation as context."""
        pair = Pair(turn, target)
        self.pairs.append(pair)
        self._context_len += self._pair_len(pair)
