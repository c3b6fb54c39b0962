"""The translate stage's async shell: between the ASR and the publish sinks.

Captions never wait for translation: every ASR revision is passed on at once, carrying
the segment's translations as they stand. The model works in a worker thread on the
newest revision of each segment (older queued revisions of a segment are superseded;
a final never is); when it is done, the segment's latest revision is passed on again
with the new translations, marked `retranslated` (the feed sends it as a `translation`
message that names the revision, not as a new one). A segment's `final` revision is
published once its translation is final (until then a partial revision with every word
committed stands in for it), so the final carries the final translation.

A failing translator is logged, restarted with fresh state, and the stage goes on; a
final whose translation failed is published with what was stable. Until a translator is
set (it loads in the background) captions pass through untranslated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from subtitled.events import SegmentUpdate, Translation
from subtitled.translate.stream import SourceUpdate, Translator, as_translation
from subtitled.workers import model_thread

log = logging.getLogger(__name__)

SegmentSink = Callable[[SegmentUpdate], None]


@dataclass
class StageStats:
    """Counters for /metrics and the exit log."""

    updates: int = 0
    """Translator calls."""
    superseded: int = 0
    """Queued revisions replaced by a newer one before the model got to them."""
    failures: int = 0
    compute_s: float = 0.0


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
        self.include_partial = include_partial
        self.finals_only = False
        """Translate final revisions only (the battery profile, `subtitled.power`):
        partials pass through with the segment's translation as it stands."""
        self._clock = clock
        self.stats = StageStats()
        self._pending: OrderedDict[int, SegmentUpdate] = OrderedDict()
        self._latest: dict[int, SegmentUpdate] = {}
        self._shown: dict[int, dict[str, Translation]] = {}
        self._revisions: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ input side

    def submit(self, update: SegmentUpdate) -> None:
        """A pipeline sink: pass the caption on now, queue it for translation."""
        if self.translator is None:
            self._emit(update, self._shown.get(update.segment_id, {}))
            if update.status == "final":
                self._forget(update.segment_id)
            return
        sid = update.segment_id
        self._latest[sid] = update
        shown = self._shown.get(sid, {})
        if update.status == "final":
            # Stand-in until the final translation is ready.
            stand_in = dataclasses.replace(update, status="partial")
            self._emit(stand_in, shown)
        else:
            self._emit(update, shown)
            if self.finals_only:
                return
        if sid in self._pending:
            if self._pending[sid].status == "final":
                return  # nothing follows a final
            self.stats.superseded += 1
        self._pending[sid] = update
        self._idle.clear()
        self._wake.set()

    def set_translator(self, translator: Translator | None) -> None:
        self.translator = translator

    # ------------------------------------------------------------------ worker

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
        for sid, update in list(self._pending.items()):
            if update.status == "final":
                self._emit(update, self._shown.get(sid, {}))
                self._forget(sid)
        self._pending.clear()

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
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            sid, update = self._pending.popitem(last=False)
            translator = self.translator
            if translator is None:
                self._emit(update, self._shown.get(sid, {}))
                continue
            await self._translate(translator, update)

    async def _translate(self, translator: Translator, update: SegmentUpdate) -> None:
        sid = update.segment_id
        words = update.committed + (update.partial if self.include_partial else ())
        source = SourceUpdate(
            segment_id=sid,
            text="".join(w.text for w in words).strip(),
            final=update.status == "final",
            words=len(words),
            emitted_unix=update.emitted_unix,
        )
        started = time.perf_counter()
        try:
            results = await model_thread("translation").call(translator.translate, source)
        except Exception:
            self.stats.failures += 1
            log.exception("the translation worker failed; restarting it (failure %d)",
                          self.stats.failures)
            try:
                await model_thread("translation").call(translator.reset)
            except Exception:
                log.exception("the translator could not be reset; translation is off")
                self.translator = None
            if source.final:
                self._emit(update, self._shown.get(sid, {}))
                self._forget(sid)
            return
        self.stats.updates += 1
        self.stats.compute_s += time.perf_counter() - started
        now = self._clock()
        latency_ms = max(now - update.emitted_unix, 0.0) * 1000.0
        translations = {
            lang: as_translation(result, latency_ms) for lang, result in results.items()
        }
        before = self._shown.get(sid, {})
        unchanged = {k: (t.stable, t.unstable) for k, t in before.items()} == {
            k: (t.stable, t.unstable) for k, t in translations.items()
        }
        self._shown[sid] = translations
        if unchanged and not source.final:
            return  # nothing new to show
        if source.final:
            self._emit(dataclasses.replace(update, emitted_unix=now), translations)
            self._forget(sid)
        elif sid not in self._pending or self._pending[sid].status != "final":
            # The latest revision was passed on when it came (with the translation as
            # it stood then): this adds the new translation to it.
            latest = self._latest.get(sid, update)
            self._emit(dataclasses.replace(latest, emitted_unix=now, retranslated=True),
                       translations)

    # ------------------------------------------------------------------ output side

    def _forget(self, sid: int) -> None:
        self._latest.pop(sid, None)
        self._shown.pop(sid, None)
        self._revisions.pop(sid, None)

    def _emit(self, update: SegmentUpdate, translations: dict[str, Translation]) -> None:
        """Pass `update` on with `translations`: a new revision of its segment, or (when
        `update.retranslated`) the segment's last revision again."""
        sid = update.segment_id
        revision = self._revisions.get(sid, 0)
        if update.retranslated and revision > 0:
            revision -= 1
        else:
            update = dataclasses.replace(update, retranslated=False)
            self._revisions[sid] = revision + 1
        out = dataclasses.replace(update, revision=revision, translations=dict(translations))
        for sink in self._sinks:
            try:
                sink(out)
            except Exception:
                log.exception("a subtitle sink failed on segment %d", sid)
