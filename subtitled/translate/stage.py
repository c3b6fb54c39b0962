"""The translate stage's async shell: between the ASR and the publish sinks.

The rules (what goes out at once, what is queued, superseded, stood in for, re-sent) are
`subtitled.translate.scheduler.TranslationScheduler`'s; this shell runs its queue on the
translation model thread and passes what it says to publish to the sinks.

A failing translator is logged, restarted with fresh state, and the stage goes on; a
final whose translation failed is published with what was stable. Until a translator is
set (it loads in the background) captions pass through untranslated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from subtitled.events import SegmentUpdate
from subtitled.translate.scheduler import StageStats, TranslationScheduler
from subtitled.translate.stream import Translator, as_translation
from subtitled.workers import model_thread

log = logging.getLogger(__name__)

SegmentSink = Callable[[SegmentUpdate], None]

__all__ = ["SegmentSink", "StageStats", "TranslationStage"]


class TranslationStage:
    """ASR revisions in (`submit`), revisions with translations out (to `sinks`)."""

    def __init__(
        self,
        sinks: Sequence[SegmentSink],
        translator: Translator | None = None,
        *,
        include_partial: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sinks = list(sinks)
        self.translator = translator
        self.core = TranslationScheduler(include_partial=include_partial)
        self._clock = clock
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> StageStats:
        return self.core.stats

    @property
    def include_partial(self) -> bool:
        return self.core.include_partial

    @include_partial.setter
    def include_partial(self, value: bool) -> None:
        self.core.include_partial = value

    @property
    def finals_only(self) -> bool:
        """Translate final revisions only (the battery profile, `subtitled.power`)."""
        return self.core.finals_only

    @finals_only.setter
    def finals_only(self, value: bool) -> None:
        self.core.finals_only = value

    def submit(self, update: SegmentUpdate) -> None:
        """A pipeline sink: pass the caption on now, queue it for translation."""
        self._publish(self.core.submit(update, translating=self.translator is not None))
        if not self.core.idle:
            self._idle.clear()
            self._wake.set()

    def set_translator(self, translator: Translator | None) -> None:
        self.translator = translator

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="translate")

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Translate what is queued (within `timeout_s`); publish every final either way."""
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout_s)
            except TimeoutError:
                log.warning("translation did not finish within %.0f s; publishing finals "
                            "with what is stable", timeout_s)
        self._publish(self.core.flush())

    async def close(self, timeout_s: float = 10.0) -> None:
        """`flush`, then stop the worker."""
        await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _work(self) -> None:
        while True:
            update = self.core.take()
            if update is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            translator = self.translator
            if translator is None:
                self._publish(self.core.untranslated(update))
                continue
            await self._translate(translator, update)

    async def _translate(self, translator: Translator, update: SegmentUpdate) -> None:
        source = self.core.source(update)
        started = time.perf_counter()
        try:
            results = await model_thread("translation").call(translator.translate, source)
        except Exception:
            log.exception("the translation worker failed; restarting it (failure %d)",
                          self.stats.failures + 1)
            self._publish(self.core.failed(update))
            try:
                await model_thread("translation").call(translator.reset)
            except Exception:
                log.exception("the translator could not be reset; translation is off")
                self.translator = None
            return
        self.stats.updates += 1
        self.stats.compute_s += time.perf_counter() - started
        now = self._clock()
        latency_ms = max(now - update.emitted_unix, 0.0) * 1000.0
        translations = {
            lang: as_translation(result, latency_ms) for lang, result in results.items()
        }
        self._publish(self.core.translated(update, translations, now))

    def _publish(self, updates: list[SegmentUpdate]) -> None:
        for update in updates:
            for sink in self._sinks:
                try:
                    sink(update)
                except Exception:
                    log.exception("a subtitle sink failed on segment %d", update.segment_id)
