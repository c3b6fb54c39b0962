"""subtitled.workers: every call of one model runs on one thread, in order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from subtitled.workers import ModelThread, model_thread


def test_calls_run_in_order_on_one_thread_that_is_not_the_loop() -> None:
    worker = ModelThread("test-worker")
    seen: list[tuple[int, int]] = []

    def record(i: int) -> int:
        seen.append((i, threading.get_ident()))
        return i * i

    async def main() -> list[int]:
        # gathered concurrently, as the pipeline and the translation stage call it
        return await asyncio.gather(*(worker.call(record, i) for i in range(20)))

    results = asyncio.run(main())
    assert results == [i * i for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    threads = {t for _, t in seen}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


def test_a_failing_call_raises_in_the_caller_and_the_thread_goes_on() -> None:
    worker = ModelThread("test-failing")

    def boom() -> None:
        raise RuntimeError("model crashed")

    async def main() -> int:
        with pytest.raises(RuntimeError, match="model crashed"):
            await worker.call(boom)
        return await worker.call(len, "abc")

    assert asyncio.run(main()) == 3


def test_one_thread_per_role_for_the_whole_process() -> None:
    assert model_thread("asr") is model_thread("asr")
    assert model_thread("asr") is not model_thread("translation")

    async def ident(role: str) -> int:
        return await model_thread(role).call(threading.get_ident)

    # a second event loop (a reload, another daemon in the same process) gets the same thread
    assert asyncio.run(ident("asr")) == asyncio.run(ident("asr"))
    assert asyncio.run(ident("asr")) != asyncio.run(ident("translation"))
