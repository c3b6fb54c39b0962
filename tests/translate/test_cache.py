"""The KV-cache ledger core, driven synchronously."""

from __future__ import annotations

import pytest

from subtitled.translate.cache import CacheLedger, FeedPlan, common_prefix


@pytest.mark.parametrize(
    ("held", "prompt", "expected"),
    [
        ((), (1, 2, 3), FeedPlan(0, (1, 2, 3))),  # empty cache: prefill all
        ((1, 2, 3), (1, 2, 3, 4, 5), FeedPlan(3, (4, 5))),  # append only
        ((1, 2, 3, 9, 9), (1, 2, 3, 4), FeedPlan(3, (4,))),  # roll back the old tail
        ((1, 2, 3), (1, 2, 3), FeedPlan(2, (3,))),  # same prompt: re-feed the last token
        ((1, 2, 3), (7, 2, 3), FeedPlan(0, (7, 2, 3))),  # changed at the start
    ],
)
def test_plan_keeps_the_common_prefix(
    held: tuple[int, ...], prompt: tuple[int, ...], expected: FeedPlan
) -> None:
    ledger = CacheLedger([None, None])
    if held:
        ledger.append(held)
    assert ledger.plan(prompt) == expected


def test_plan_without_reuse_feeds_everything() -> None:
    ledger = CacheLedger([None])
    ledger.append((1, 2, 3))
    assert ledger.plan((1, 2, 3, 4), reuse=False) == FeedPlan(0, (1, 2, 3, 4))


@pytest.mark.parametrize(
    ("reserve", "steps", "keep", "possible"),
    [
        # window 4, reserve 2: the layer holds at most 6 tokens.
        (2, [(1,)] * 10, 8, True),  # roll back 2: within the reserve
        (2, [(1,)] * 10, 7, False),  # roll back 3: the layer lost position 3
        (2, [(1,)] * 3, 1, True),  # a short cache still holds position 0
        (100, [tuple(range(10))], 9, False),  # a 10-token call left only the window
        (100, [tuple(range(4))] * 3, 9, True),  # calls within the window keep the reserve
        (2, [(1,)] * 10, 0, True),  # starting afresh is always possible
    ],
)
def test_sliding_layers_limit_rollback(
    reserve: int, steps: list[tuple[int, ...]], keep: int, possible: bool
) -> None:
    ledger = CacheLedger([4, None], reserve=reserve)
    for ids in steps:
        ledger.append(ids)
    assert ledger.can_keep(keep) is possible
    start, end = ledger.span(0)
    assert end - start <= 4 + reserve
    assert ledger.span(1) == (0, ledger.held)


def test_plan_falls_back_to_a_full_prefill_past_the_reserve() -> None:
    ledger = CacheLedger([4], reserve=1)
    ledger.append(tuple(range(10)))  # one long call: holds positions 6..9
    plan = ledger.plan((*tuple(range(8)), 99))
    assert plan == FeedPlan(0, (*tuple(range(8)), 99))


def test_rollback_refuses_what_a_sliding_layer_lost() -> None:
    ledger = CacheLedger([2], reserve=0)
    for _ in range(5):
        ledger.append((1,))
    with pytest.raises(ValueError, match="sliding"):
        ledger.rollback(3)
    ledger.rollback(0)
    assert ledger.held == 0 and ledger.lengths() == (0,)


def test_common_prefix() -> None:
    assert common_prefix((1, 2, 3), (1, 2, 4)) == 2
    assert common_prefix((), (1,)) == 0
    assert common_prefix((1, 2), (1, 2)) == 2


def test_a_shared_buffer_layer_keeps_a_long_chunk() -> None:
    """A 10-token call leaves an append layer (window 4) only its last 4 tokens, but a
    shared-buffer layer keeps them all, so it can roll back within its reserve."""
    ledger = CacheLedger([4, 4], reserve=100, trims=[True, False])
    ledger.append(tuple(range(10)))
    assert ledger.span(0) == (6, 10) and ledger.span(1) == (0, 10)
    assert not ledger.can_keep(9)
    shared = CacheLedger([4], reserve=100, trims=[False])
    shared.append(tuple(range(10)))
    assert shared.can_keep(9) and shared.can_keep(5)
    with pytest.raises(ValueError, match="one flag per layer"):
        CacheLedger([4, None], trims=[False])
