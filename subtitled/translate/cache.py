"""KV-cache bookkeeping as a pure core: which token ids the cache holds, what to keep.

The cache holds the prompt prefilled so far plus the tokens decoded after it. For the next
prompt the ledger finds the common prefix, rolls back only what changed (an ASR revision,
the old translation tail) and says what to feed. It owns no tensors: the shell
(`kvcache.KvCache`) keeps its tensors to the spans the ledger reports.

Sliding-window layers. To roll back `r` tokens, a sliding layer must still hold the
`window` tokens before the new end, so the shell keeps up to `window + reserve` tokens of
each sliding layer. A rollback deeper than that cannot be undone in place; the ledger then
says to re-prefill from position 0 (the only point every layer can restart from without
older state). A layer whose graph returns at most `window` cache tokens (`trims`: an
append layer; the graph masks by absolute position, so a trimmed cache is exact) also
loses the older part of a chunk longer than the window fed in one call; a shared-buffer
layer keeps it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from subtitled.errors import InvalidArgument


def common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common prefix of two sequences (token ids, words)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class FeedPlan:
    """What one update must do: roll the cache back to `keep` tokens, then feed `feed`."""

    keep: int
    feed: tuple[int, ...]

    @property
    def rolled_back(self) -> bool:
        return self.keep == 0


class CacheLedger:
    """The token ids a KV cache holds, and for each layer the first position it still holds.

    `windows[i]` is layer i's sliding window (None: full attention, which holds every
    token). `reserve` is how many tokens beyond its window a sliding layer keeps so that
    rollbacks up to that depth stay in place. `trims[i]` says layer i's graph returns only
    the last `window` tokens of a longer chunk (default: every sliding layer).
    """

    def __init__(
        self,
        windows: Sequence[int | None],
        reserve: int = 256,
        trims: Sequence[bool] | None = None,
    ) -> None:
        if reserve < 0:
            raise InvalidArgument("reserve must be >= 0")
        self.windows = tuple(windows)
        self.reserve = reserve
        self.trims = tuple(trims) if trims is not None else (True,) * len(self.windows)
        if len(self.trims) != len(self.windows):
            raise InvalidArgument("trims must give one flag per layer")
        self.tokens: list[int] = []
        self.held_from = [0] * len(self.windows)

    @property
    def held(self) -> int:
        return len(self.tokens)

    def span(self, layer: int) -> tuple[int, int]:
        """Positions [start, end) that `layer` holds."""
        return self.held_from[layer], self.held

    def can_keep(self, keep: int) -> bool:
        """Whether rolling back to `keep` tokens leaves every layer exact."""
        if not 0 <= keep <= self.held:
            return False
        if keep == 0:  # a fresh start needs no older state
            return True
        for window, start in zip(self.windows, self.held_from, strict=True):
            # After the rollback a sliding layer must hold [keep - window, keep).
            if window is not None and start > 0 and start > keep - window:
                return False
        return True

    def plan(self, prompt: Sequence[int], reuse: bool = True) -> FeedPlan:
        """Keep the longest usable common prefix with `prompt` and feed the rest.

        At least the prompt's last token is fed: its logits start the decoding. Without
        `reuse` (the re-prefill baseline) nothing is kept.
        """
        if not prompt:
            raise InvalidArgument("an empty prompt cannot be decoded")
        keep = min(common_prefix(self.tokens, prompt), len(prompt) - 1) if reuse else 0
        if not self.can_keep(keep):
            keep = 0
        return FeedPlan(keep, tuple(prompt[keep:]))

    def rollback(self, keep: int) -> None:
        """Forget every token from position `keep` on."""
        if not self.can_keep(keep):
            raise InvalidArgument(f"cannot roll back to {keep}: a sliding layer no longer holds it")
        del self.tokens[keep:]
        if keep == 0:
            self.held_from = [0] * len(self.windows)

    def append(self, ids: Sequence[int]) -> None:
        """Record `ids` fed in one call after the held tokens."""
        self.tokens.extend(ids)
        end = self.held
        for i, window in enumerate(self.windows):
            if window is None:
                continue
            start = self.held_from[i]
            if len(ids) > window and self.trims[i]:  # only the last `window` came back
                start = max(start, end - window)
            self.held_from[i] = max(start, end - window - self.reserve)

    def lengths(self) -> tuple[int, ...]:
        """Tokens each layer holds, as the shell must keep them."""
        return tuple(self.held - start for start in self.held_from)
