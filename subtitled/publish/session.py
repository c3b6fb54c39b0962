"""Per-client state of the subtitle feed: a sans-I/O core.

`Outbox` is one client's bounded send queue and its overflow policy; `TokenBucket`
limits what a client may send; `ClientSession` answers a client's frames. None of
them touches a socket or reads a clock: the shell passes `now_s` and does what the
returned intents say (send a reply, close with a code).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from subtitled.errors import InvalidArgument
from subtitled.publish.protocol import (
    ClientMessageError,
    JsonObject,
    Ping,
    error_payload,
    parse_client_message,
    pong_payload,
    subscribed_payload,
)

# WebSocket close codes (RFC 6455 section 7.4.1) the server uses.
CLOSE_GOING_AWAY = 1001
"""The server is shutting down."""
CLOSE_POLICY_VIOLATION = 1008
"""The client sent messages faster than the rate limit allows."""
CLOSE_MESSAGE_TOO_BIG = 1009
"""A client frame exceeded the size limit (sent by websockets itself)."""
CLOSE_INTERNAL_ERROR = 1011
"""The server hit an unexpected error serving this client."""
CLOSE_TRY_AGAIN_LATER = 1013
"""The client fell behind the feed; it may reconnect with `?since=`."""

RATE_LIMITED = "rate-limited"


@dataclass(frozen=True)
class CloseIntent:
    """The shell should close this client's connection with `code` and `reason`."""

    code: int
    reason: str


@dataclass(frozen=True)
class Outgoing:
    """One encoded message waiting in a client's outbox.

    `seq` is None for control messages (hello, pong, error), which are never
    dropped and do not count against the queue's capacity. `droppable` marks
    partial revisions: the final (or a later partial) supersedes them.
    """

    text: str
    seq: int | None = None
    segment_id: int | None = None
    droppable: bool = False


@dataclass(frozen=True)
class PushResult:
    """What a push did: how many partials it dropped, and whether to close the client."""

    dropped: int = 0
    close: CloseIntent | None = None


@dataclass
class Outbox:
    """One client's bounded queue of feed messages, with the slow-client policy.

    At most `capacity` feed messages wait. When the queue is full, queued partials
    are dropped first (a partial of the same segment before others, oldest first);
    a new partial that finds no room is itself dropped. Finals and statuses are
    never dropped: if one does not fit, or the client is more than `max_lag`
    messages behind the feed (`seq` of the newest message minus `seq` of the last
    one delivered), the outbox closes with `CLOSE_TRY_AGAIN_LATER`.

    The backlog (hello and replayed history) is sent first and is exempt from the
    capacity: it is bounded by the feed's history size instead. `start_seq` is the
    feed's last seq when the client joined; lag is counted from there.
    """

    capacity: int
    max_lag: int
    start_seq: int = 0
    closed: CloseIntent | None = field(default=None, init=False)
    delivered_seq: int = field(default=0, init=False)
    _backlog: deque[Outgoing] = field(default_factory=deque, init=False, repr=False)
    _queue: deque[Outgoing] = field(default_factory=deque, init=False, repr=False)
    _feed_count: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise InvalidArgument(f"capacity must be at least 1, got {self.capacity}")
        if self.max_lag < 1:
            raise InvalidArgument(f"max_lag must be at least 1, got {self.max_lag}")
        self.delivered_seq = self.start_seq

    def __len__(self) -> int:
        """Messages waiting, backlog and control messages included."""
        return len(self._backlog) + len(self._queue)

    @property
    def feed_count(self) -> int:
        """Feed messages waiting in the live queue (what `capacity` bounds)."""
        return self._feed_count

    def push_backlog(self, item: Outgoing) -> None:
        """Queue hello or a replayed message, to be sent before any live message."""
        if self.closed is None:
            self._backlog.append(item)

    def push_control(self, item: Outgoing) -> None:
        """Queue a reply (pong, error, a new hello): never dropped, not counted."""
        if self.closed is None:
            self._queue.append(item)

    def push(self, item: Outgoing) -> PushResult:
        """Queue a live feed message, applying the drop and close policy."""
        if self.closed is not None:
            return PushResult()
        if item.seq is not None and item.seq - self.delivered_seq > self.max_lag:
            return self._close(
                f"client fell behind: {item.seq - self.delivered_seq} messages behind the feed"
            )
        dropped = 0
        if self._feed_count >= self.capacity:
            victim = self._partial_to_drop(item.segment_id)
            if victim is not None:
                self._queue.remove(victim)
                self._feed_count -= 1
                dropped = 1
            elif item.droppable:
                return PushResult(dropped=1)
            else:
                return self._close(
                    f"client fell behind: {self.capacity} messages queued and none droppable"
                )
        self._queue.append(item)
        self._feed_count += 1
        return PushResult(dropped=dropped)

    def pop(self) -> Outgoing | None:
        """The next message to send, or None when there is nothing to send."""
        if self.closed is not None:
            return None
        if self._backlog:
            return self._backlog.popleft()
        if self._queue:
            item = self._queue.popleft()
            if item.seq is not None:
                self._feed_count -= 1
            return item
        return None

    def delivered(self, item: Outgoing) -> None:
        """Record that `item` was written to the connection."""
        if item.seq is not None and item.seq > self.delivered_seq:
            self.delivered_seq = item.seq

    def drop_partials(self) -> int:
        """Drop every queued partial (at shutdown, when only finals matter); return the count."""
        kept = deque(item for item in self._queue if not item.droppable)
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        self._feed_count -= dropped
        return dropped

    def _partial_to_drop(self, segment_id: int | None) -> Outgoing | None:
        oldest: Outgoing | None = None
        for queued in self._queue:
            if not queued.droppable:
                continue
            if segment_id is not None and queued.segment_id == segment_id:
                return queued  # superseded by the incoming revision
            if oldest is None:
                oldest = queued
        return oldest

    def _close(self, reason: str) -> PushResult:
        self.closed = CloseIntent(CLOSE_TRY_AGAIN_LATER, reason)
        self._backlog.clear()
        self._queue.clear()
        self._feed_count = 0
        return PushResult(close=self.closed)


@dataclass
class TokenBucket:
    """A token bucket: `burst` messages at once, then `rate_per_s` on average."""

    rate_per_s: float
    burst: float
    _tokens: float = field(default=-1.0, init=False, repr=False)
    _last_s: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise InvalidArgument(f"rate_per_s must be positive, got {self.rate_per_s}")
        if not self.burst >= 1:
            raise InvalidArgument(f"burst must be at least 1, got {self.burst}")
        self._tokens = float(self.burst)

    def take(self, now_s: float) -> bool:
        """Spend one token if there is one; `now_s` is any monotonic clock."""
        if self._last_s is not None and now_s > self._last_s:
            self._tokens = min(self.burst, self._tokens + (now_s - self._last_s) * self.rate_per_s)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class ClientSession:
    """One connected client: its language filter, rate limit and outbox.

    `languages` is the set of target languages whose translations the client
    receives; None means all of them.
    """

    outbox: Outbox
    bucket: TokenBucket
    languages: frozenset[str] | None = None

    def receive(self, data: str | bytes, now_s: float) -> JsonObject | CloseIntent:
        """Answer one client frame: a reply to send, or a close when over the rate limit."""
        if not self.bucket.take(now_s):
            return CloseIntent(
                CLOSE_POLICY_VIOLATION,
                f"rate limit exceeded: at most {self.bucket.rate_per_s:g} messages per second",
            )
        try:
            request = parse_client_message(data)
        except ClientMessageError as exc:
            return error_payload(exc.code, exc.message)
        if isinstance(request, Ping):
            return pong_payload()
        self.languages = request.languages
        return subscribed_payload(self.languages)


def reply_error_code(reply: JsonObject | CloseIntent) -> str | None:
    """The error code of a reply, for metrics: the `error` code, or `rate-limited`."""
    if isinstance(reply, CloseIntent):
        return RATE_LIMITED
    code: Any = reply.get("code") if reply.get("type") == "error" else None
    return code if isinstance(code, str) else None
