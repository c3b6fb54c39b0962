"""One long-lived thread per model.

Model calls block for tens to hundreds of milliseconds, so they run off the event loop.
They do not go to asyncio's default executor: that pool hands each call to whichever of
its threads is idle, and every thread that has once run a model keeps its own copy of
the model's working memory (a glibc malloc arena, the BLAS library's per-thread
buffers). Measured with the ASR alone (`tiny.en`, 48 calls on 8-28 s windows of real
speech, malloc_trim after each): one thread 318 MB resident, the same calls spread over
three threads 405 MB, a step that appears whenever a call first lands on a new thread —
in a 30-minute soak, minutes in. A `ModelThread` runs every call of one model on one
thread, for the life of the process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class ModelThread:
    """A single worker thread; `await thread.call(fn, *args)` runs `fn` on it, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


@functools.cache
def model_thread(role: str) -> ModelThread:
    """The process's thread for `role` ('asr', 'translation'): created on first use.

    Shared by every pipeline in the process (tests run several daemons in one), so
    their calls to one kind of model queue on one thread, as they share its cores.
    """
    return ModelThread(f"subtitled-{role}")
