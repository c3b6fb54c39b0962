"""Bounded channels: each overflow policy step by step, with no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from subtitled.channel import Channel


def test_drop_oldest_never_waits_and_counts_what_it_drops() -> None:
    drops: list[int] = []

    async def scenario() -> tuple[list[int], bool]:
        channel: Channel[int] = Channel(3, "drop-oldest", on_drop=drops.append)
        for i in range(5):
            await channel.put(i)  # returns at once: nothing waits on a consumer
        channel.close()
        return await channel.take()

    items, ended = asyncio.run(scenario())
    assert items == [2, 3, 4] and ended
    assert drops == [1, 2]


def test_back_pressure_waits_for_room_and_loses_nothing() -> None:
    async def scenario() -> tuple[list[list[int]], list[str]]:
        channel: Channel[int] = Channel(2, "back-pressure")
        events: list[str] = []

        async def produce() -> None:
            for i in range(5):
                await channel.put(i)
                events.append(f"put {i}")
            channel.close()

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0)  # the producer runs until the channel is full
        assert events == ["put 0", "put 1"] and not producer.done()
        batches = []
        ended = False
        while not ended:
            items, ended = await channel.take()
            batches.append(items)
            await asyncio.sleep(0)  # let the producer refill
        await producer
        return batches, events

    batches, events = asyncio.run(scenario())
    assert [i for batch in batches for i in batch] == [0, 1, 2, 3, 4]
    assert all(len(batch) <= 2 for batch in batches)
    assert events == [f"put {i}" for i in range(5)]


def test_the_end_is_never_dropped_and_follows_the_items() -> None:
    async def scenario() -> list[tuple[list[int], bool]]:
        channel: Channel[int] = Channel(1, "drop-oldest")
        await channel.put(1)
        channel.close()  # a full channel still takes the end
        first = await channel.take()
        second = await channel.take()
        return [first, second]

    assert asyncio.run(scenario()) == [([1], True), ([], True)]


def test_a_consumer_waits_for_the_first_item() -> None:
    async def scenario() -> tuple[list[int], bool]:
        channel: Channel[int] = Channel(4, "back-pressure")
        taker = asyncio.create_task(channel.take())
        await asyncio.sleep(0)
        assert not taker.done()
        await channel.put(7)
        return await taker

    assert asyncio.run(scenario()) == ([7], False)


def test_bad_use_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Channel(0, "drop-oldest")

    async def scenario() -> None:
        channel: Channel[int] = Channel(1, "back-pressure")
        channel.close()
        await channel.put(1)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(scenario())
