"""Per-client core: the outbox's slow-client policy, the rate limit, replies to frames."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from subtitled.publish.session import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    ClientSession,
    CloseIntent,
    Outbox,
    Outgoing,
    TokenBucket,
    reply_error_code,
)


def fin(seq: int, segment_id: int | None = None) -> Outgoing:
    return Outgoing(f"final {seq}", seq, segment_id if segment_id is not None else seq)


def par(seq: int, segment_id: int) -> Outgoing:
    return Outgoing(f"partial {seq}", seq, segment_id, droppable=True)


def drain(outbox: Outbox) -> list[str]:
    sent = []
    while (item := outbox.pop()) is not None:
        outbox.delivered(item)
        sent.append(item.text)
    return sent


@dataclass(frozen=True)
class OverflowCase:
    name: str
    capacity: int
    pushes: tuple[Outgoing, ...]
    queued: tuple[str, ...]
    dropped: int
    closed: bool = False


OVERFLOW_CASES = [
    OverflowCase("fits", 3, (par(1, 1), fin(2, 1), fin(3)), ("partial 1", "final 2", "final 3"), 0),
    OverflowCase(
        "same segment's partial dropped first",
        2,
        (par(1, 1), par(2, 2), par(3, 2)),
        ("partial 1", "partial 3"),
        1,
    ),
    OverflowCase(
        "oldest partial dropped for a final",
        2,
        (par(1, 1), par(2, 2), fin(3, 3)),
        ("partial 2", "final 3"),
        1,
    ),
    OverflowCase(
        "incoming partial dropped when only finals queued",
        2,
        (fin(1), fin(2), par(3, 3)),
        ("final 1", "final 2"),
        1,
    ),
    OverflowCase("finals overflow: close", 2, (fin(1), fin(2), fin(3)), (), 0, closed=True),
]


@pytest.mark.parametrize("case", OVERFLOW_CASES, ids=lambda c: c.name)
def test_outbox_overflow_policy(case: OverflowCase) -> None:
    outbox = Outbox(capacity=case.capacity, max_lag=1_000)
    results = [outbox.push(item) for item in case.pushes]
    assert sum(r.dropped for r in results) == case.dropped
    close = results[-1].close
    if case.closed:
        assert close is not None
        assert close.code == CLOSE_TRY_AGAIN_LATER
        assert "fell behind" in close.reason
        assert outbox.closed == close
    else:
        assert close is None
    assert tuple(drain(outbox)) == case.queued


def test_outbox_closes_a_client_lagging_behind_even_with_room() -> None:
    outbox = Outbox(capacity=100, max_lag=5, start_seq=10)
    outbox.push_backlog(Outgoing("hello"))
    for seq in range(11, 16):
        assert outbox.push(par(seq, 1)).close is None
    result = outbox.push(par(16, 1))
    assert result.close is not None
    assert result.close.code == CLOSE_TRY_AGAIN_LATER
    assert outbox.pop() is None  # nothing more is sent to a closed client
    assert outbox.push(fin(17)).close is None  # and later pushes are ignored


def test_outbox_lag_counts_from_the_last_delivered_message() -> None:
    outbox = Outbox(capacity=100, max_lag=3)
    for seq in range(1, 100):
        assert outbox.push(fin(seq)).close is None
        drain(outbox)
    assert outbox.delivered_seq == 99


def test_backlog_and_control_messages_do_not_count_against_capacity() -> None:
    outbox = Outbox(capacity=1, max_lag=100, start_seq=50)
    for seq in range(1, 51):  # a long replay
        outbox.push_backlog(Outgoing(f"replay {seq}", seq))
    outbox.push_control(Outgoing("pong"))
    assert outbox.push(fin(51)).close is None
    outbox.push_control(Outgoing("pong"))
    assert outbox.feed_count == 1
    sent = drain(outbox)
    assert sent[:50] == [f"replay {seq}" for seq in range(1, 51)]
    assert sent[50:] == ["pong", "final 51", "pong"]


def test_drop_partials_keeps_finals_in_order() -> None:
    outbox = Outbox(capacity=10, max_lag=100)
    for item in (par(1, 1), fin(2, 1), par(3, 2), Outgoing("pong"), fin(4, 2)):
        outbox.push(item) if item.seq is not None else outbox.push_control(item)
    assert outbox.drop_partials() == 2
    assert outbox.feed_count == 2
    assert drain(outbox) == ["final 2", "pong", "final 4"]


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ((0.0, 0.0, 0.0), (True, True, False)),  # burst of 2
        ((0.0, 0.0, 0.1), (True, True, False)),  # 0.1 s refills 0.5 token
        ((0.0, 0.0, 0.5), (True, True, True)),  # 0.5 s refills 2.5, capped at 2
        ((0.0, 0.0, 0.5, 0.5, 0.5), (True, True, True, True, False)),
        ((5.0, 4.0, 3.0), (True, True, False)),  # a clock going backwards refills nothing
    ],
)
def test_token_bucket(times: tuple[float, ...], expected: tuple[bool, ...]) -> None:
    bucket = TokenBucket(rate_per_s=5.0, burst=2)
    assert tuple(bucket.take(t) for t in times) == expected


def new_session(burst: int = 100) -> ClientSession:
    return ClientSession(Outbox(10, 100), TokenBucket(10.0, burst))


@pytest.mark.parametrize(
    ("frame", "reply_type", "code"),
    [
        ('{"type":"ping"}', "pong", None),
        ('{"type":"subscribe","languages":["de"]}', "subscribed", None),
        ("not json", "error", "not-json"),
        ('{"type":"dance"}', "error", "unknown-type"),
        (b"\x00\x01", "error", "not-text"),
    ],
)
def test_session_replies(frame: str | bytes, reply_type: str, code: str | None) -> None:
    reply = new_session().receive(frame, now_s=0.0)
    assert not isinstance(reply, CloseIntent)
    assert reply["type"] == reply_type
    assert reply_error_code(reply) == code


def test_subscribe_changes_the_language_filter() -> None:
    session = new_session()
    assert session.languages is None
    reply = session.receive('{"type":"subscribe","languages":["es","de"]}', 0.0)
    assert reply == {"type": "subscribed", "languages": ["de", "es"]}
    assert session.languages == frozenset({"de", "es"})
    session.receive('{"type":"subscribe","languages":null}', 0.0)
    assert session.languages is None


def test_session_over_rate_limit_closes_with_policy_violation() -> None:
    session = new_session(burst=3)
    replies = [session.receive('{"type":"ping"}', now_s=0.0) for _ in range(4)]
    assert replies[:3] == [{"type": "pong"}] * 3
    assert isinstance(replies[3], CloseIntent)
    assert replies[3].code == CLOSE_POLICY_VIOLATION
    assert reply_error_code(replies[3]) == "rate-limited"
