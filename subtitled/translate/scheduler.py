"""The translate stage's core: which ASR revisions go out now, which get translated, and
in what order. Synchronous and clock-free (the caller passes `now`), so every rule is a
table row in a test; `subtitled.translate.stage` is its async shell.

- Captions never wait: every revision goes out at once with the segment's translations
  as they stand.
- The queue holds the newest revision of each segment (a newer one supersedes a queued
  one; nothing supersedes a queued final), oldest segment first.
- A final goes out as a partial stand-in (every word committed) until its translation is
  final, so the final carries the final translation; a failed or absent translation
  publishes it with what was stable.
- A translation of a partial re-sends the segment's latest revision, marked
  `retranslated` (the same revision number, new translations).
- `finals_only` (the battery profile) queues finals only.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from subtitled.events import SegmentUpdate, Translation
from subtitled.translate.stream import SourceUpdate


@dataclass
class StageStats:
    """Counters for /metrics and the exit log."""

    updates: int = 0
    """Translator calls."""
    superseded: int = 0
    """Queued revisions replaced by a newer one before the model got to them."""
    failures: int = 0
    compute_s: float = 0.0


class TranslationScheduler:
    """ASR revisions in, revisions to publish out; the queue of what to translate."""

    def __init__(self, *, include_partial: bool = False) -> None:
        self.include_partial = include_partial
        """Translate the ASR's unstable tail too, not only committed words."""
        self.finals_only = False
        """Translate final revisions only: partials pass with the translation as it stands."""
        self.stats = StageStats()
        self._pending: OrderedDict[int, SegmentUpdate] = OrderedDict()
        self._latest: dict[int, SegmentUpdate] = {}
        self._shown: dict[int, dict[str, Translation]] = {}
        self._revisions: dict[int, int] = {}

    @property
    def idle(self) -> bool:
        """Nothing queued for translation."""
        return not self._pending

    def submit(self, update: SegmentUpdate, translating: bool) -> list[SegmentUpdate]:
        """A revision from the ASR: what to publish now; queue it if `translating` (a
        translator is live)."""
        sid = update.segment_id
        shown = self._shown.get(sid, {})
        if not translating:
            out = [self._stamp(update, shown)]
            if update.status == "final":
                self._forget(sid)
            return out
        self._latest[sid] = update
        if update.status == "final":
            out = [self._stamp(dataclasses.replace(update, status="partial"), shown)]
        else:
            out = [self._stamp(update, shown)]
            if self.finals_only:
                return out
        if sid in self._pending:
            if self._pending[sid].status == "final":
                return out  # nothing follows a final
            self.stats.superseded += 1
        self._pending[sid] = update
        return out

    def take(self) -> SegmentUpdate | None:
        """The next revision to translate (the oldest queued segment's newest), or None."""
        if not self._pending:
            return None
        return self._pending.popitem(last=False)[1]

    def source(self, update: SegmentUpdate) -> SourceUpdate:
        """What the translator gets for `update`."""
        words = update.committed + (update.partial if self.include_partial else ())
        return SourceUpdate(
            segment_id=update.segment_id,
            text="".join(w.text for w in words).strip(),
            final=update.status == "final",
            words=len(words),
            emitted_unix=update.emitted_unix,
        )

    def untranslated(self, update: SegmentUpdate) -> list[SegmentUpdate]:
        """`update` was taken but no translator is live any more: publish it as it stands."""
        out = self._stamp(update, self._shown.get(update.segment_id, {}))
        if update.status == "final":
            self._forget(update.segment_id)
        return [out]

    def translated(
        self, update: SegmentUpdate, translations: dict[str, Translation], now: float
    ) -> list[SegmentUpdate]:
        """The translator's result for `update` (taken earlier): what to publish."""
        sid = update.segment_id
        final = update.status == "final"
        before = self._shown.get(sid, {})
        unchanged = {k: (t.stable, t.unstable) for k, t in before.items()} == {
            k: (t.stable, t.unstable) for k, t in translations.items()
        }
        self._shown[sid] = translations
        if unchanged and not final:
            return []  # nothing new to show
        if final:
            out = self._stamp(dataclasses.replace(update, emitted_unix=now), translations)
            self._forget(sid)
            return [out]
        if sid in self._pending and self._pending[sid].status == "final":
            return []  # the final's own translation follows
        # The latest revision went out when it came (with the translation as it stood
        # then): this adds the new translation to it.
        latest = self._latest.get(sid, update)
        return [
            self._stamp(dataclasses.replace(latest, emitted_unix=now, retranslated=True),
                        translations)
        ]

    def failed(self, update: SegmentUpdate) -> list[SegmentUpdate]:
        """The translator failed on `update`: a final goes out with what was stable."""
        self.stats.failures += 1
        if update.status != "final":
            return []
        out = self._stamp(update, self._shown.get(update.segment_id, {}))
        self._forget(update.segment_id)
        return [out]

    def flush(self) -> list[SegmentUpdate]:
        """Drop the queue; every queued final goes out with what is stable."""
        out = []
        for sid, update in list(self._pending.items()):
            if update.status == "final":
                out.append(self._stamp(update, self._shown.get(sid, {})))
                self._forget(sid)
        self._pending.clear()
        return out

    def _forget(self, sid: int) -> None:
        self._latest.pop(sid, None)
        self._shown.pop(sid, None)
        self._revisions.pop(sid, None)

    def _stamp(self, update: SegmentUpdate, translations: dict[str, Translation]) -> SegmentUpdate:
        """`update` with `translations` and its revision number: a new revision of its
        segment, or (when `update.retranslated`) the segment's last revision again."""
        sid = update.segment_id
        revision = self._revisions.get(sid, 0)
        if update.retranslated and revision > 0:
            revision -= 1
        else:
            update = dataclasses.replace(update, retranslated=False)
            self._revisions[sid] = revision + 1
        return dataclasses.replace(update, revision=revision, translations=dict(translations))
