"""The daemon's pipeline, declared: which stages a segment revision passes, in order.

    capture -[audio Channel]-> asr -> BEFORE... -> translate -> AFTER... -> sinks

`capture`, `asr` (`subtitled.pipeline`) and `translate` (`subtitled.translate.stage`) own
threads, queues and clocks. Every other stage is a *map stage*: a pure, synchronous core
`SegmentUpdate -> SegmentUpdate` with a name, run on the event loop where it is declared
(`Graph.before` sees the ASR's words; `Graph.after` sees them with their translations).
A new stage of that kind (a profanity filter, a glossary, a casing rule) is its core plus
one line in the daemon's declaration (`Daemon.graph`); nothing else changes.

A stage that raises is logged (once per stage, then counted) and skipped: the revision goes
on unchanged, so a broken filter never stops the captions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from subtitled.events import SegmentUpdate

log = logging.getLogger(__name__)

SegmentCore = Callable[[SegmentUpdate], SegmentUpdate]
SegmentSink = Callable[[SegmentUpdate], None]


@dataclass
class MapStage:
    """A named pure stage; `failures` counts the revisions it raised on."""

    name: str
    core: SegmentCore
    failures: int = 0

    def __call__(self, update: SegmentUpdate) -> SegmentUpdate:
        try:
            return self.core(update)
        except Exception:
            self.failures += 1
            if self.failures == 1:
                log.exception("stage %s failed; revisions pass it unchanged", self.name)
            return update


@dataclass(frozen=True)
class Graph:
    """The map stages around translation, in the order they run."""

    before: Sequence[MapStage] = ()
    """Between the ASR and translation: what is translated."""
    after: Sequence[MapStage] = ()
    """Between translation and the sinks: what is published."""
    sinks: Sequence[str] = field(default=("publish",))
    """Names of the sinks, for `describe`."""

    def describe(self) -> str:
        """The pipeline in one line, e.g. `capture -> asr -> translate -> publish`."""
        names = ["capture", "asr", *(s.name for s in self.before), "translate"]
        names += [s.name for s in self.after]
        return " -> ".join(names) + " -> " + " + ".join(self.sinks)


def chain(stages: Sequence[MapStage], sinks: Sequence[SegmentSink]) -> SegmentSink:
    """One sink: `stages` in order, then the result to every sink in `sinks`."""
    stages, sinks = tuple(stages), tuple(sinks)

    def run(update: SegmentUpdate) -> None:
        for stage in stages:
            update = stage(update)
        for sink in sinks:
            sink(update)

    return run
