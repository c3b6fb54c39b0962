"""Bounded channels between pipeline stages, each with a named overflow policy.

- `drop-oldest`: the producer never waits; when the channel is full, the oldest item
  goes (counted). Live audio: a capture callback cannot wait, and late audio is worth
  less than new audio.
- `back-pressure`: the producer waits for room. Files and stdin: nothing is lost by
  reading them later.

The translate stage's queue supersedes by segment (`translate.scheduler`), and each
client's outbox drops partials first (`publish.session`): those are the other two
policies, kept with the data they understand.

`close()` puts an end mark that is never dropped; the consumer's `take()` returns the
items queued before it and `ended=True`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from subtitled.errors import InvalidArgument, InvalidState

T = TypeVar("T")
Overflow = Literal["drop-oldest", "back-pressure"]


class Channel(Generic[T]):
    """A bounded FIFO for one producer and one consumer on one event loop."""

    def __init__(
        self,
        capacity: int,
        overflow: Overflow,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise InvalidArgument(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self.dropped = 0
        """Items dropped by `drop-oldest` so far."""
        self._on_drop = on_drop
        self._items: deque[T] = deque()
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Queue `item`: at once under `drop-oldest`, when there is room under
        `back-pressure`."""
        if self._closed:
            raise InvalidState("put() on a closed channel")
        if self.overflow == "back-pressure":
            while len(self._items) >= self.capacity:
                self._writable.clear()
                await self._writable.wait()
        else:
            while len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
                if self._on_drop is not None:
                    self._on_drop(self.dropped)
        self._items.append(item)
        self._readable.set()

    def close(self) -> None:
        """No more items: the consumer gets what is queued, then the end."""
        self._closed = True
        self._readable.set()

    async def take(self) -> tuple[list[T], bool]:
        """Every queued item (waiting for at least one, or the end) and whether the
        channel has ended."""
        while not self._items and not self._closed:
            self._readable.clear()
            await self._readable.wait()
        items = list(self._items)
        self._items.clear()
        self._writable.set()
        return items, self._closed
