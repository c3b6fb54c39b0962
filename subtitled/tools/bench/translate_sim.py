"""The translate stage on a simulated clock, for `subtitled bench` and `bench-translate`.

ASR revisions arrive at their benchmark times. As in the daemon's `TranslationStage`,
each is passed on at once with the segment's translations as they stand; the translator
works on the newest queued revision of each segment (a final is never superseded), and
its measured wall time is charged to the clock, so a slow update delays the ones after
it exactly as a busy worker thread would. A final is published when its translation is.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from subtitled.events import SegmentUpdate, Translation, Word
from subtitled.tools.bench.metrics import Emission
from subtitled.translate.stream import LanguageResult, SourceUpdate, Translator, as_translation


@dataclass(frozen=True)
class UpdateCost:
    """One translator call: when its revision arrived, when it was done, what it cost."""

    segment_id: int
    arrival_s: float
    done_s: float
    compute_s: float
    cpu_s: float
    """Process CPU time of the call (all threads): less sensitive than `compute_s` to
    other processes competing for the cores."""
    prefilled: int
    decode_steps: int
    final: bool
    words: int
    stable_tokens: dict[str, int]


@dataclass(frozen=True)
class Simulation:
    emissions: tuple[Emission, ...]
    costs: tuple[UpdateCost, ...]


def simulate(
    emissions: Sequence[Emission],
    translator: Translator,
    include_partial: bool = False,
    coalesce: bool = True,
    finals_only: bool = False,
) -> Simulation:
    """Run `translator` over the ASR `emissions` on the benchmark clock.

    Without `coalesce` every revision is translated, however far behind that puts the
    translator (for comparing two translators on the same updates). With `finals_only`
    (the battery profile) partial revisions pass through untranslated."""
    out: list[Emission] = []
    costs: list[UpdateCost] = []
    shown: dict[int, dict[str, Translation]] = {}
    latest: dict[int, SegmentUpdate] = {}
    pending: OrderedDict[int, tuple[float, SegmentUpdate]] = OrderedDict()
    backlog: deque[tuple[float, SegmentUpdate]] = deque()  # without coalescing
    ordered = sorted(emissions, key=lambda e: e.time_s)

    def emit(time_s: float, update: SegmentUpdate, translations: dict[str, Translation]) -> None:
        out.append(Emission(time_s, dataclasses.replace(update, translations=dict(translations))))

    def arrive(emission: Emission) -> None:
        update = emission.update
        sid = update.segment_id
        latest[sid] = update
        stand_in = dataclasses.replace(update, status="partial")
        emit(emission.time_s, stand_in, shown.get(sid, {}))
        if finals_only and update.status != "final":
            return
        if not coalesce:
            backlog.append((emission.time_s, update))
            return
        if sid in pending and pending[sid][1].status == "final":
            return
        pending[sid] = (emission.time_s, update)

    clock = 0.0
    i = 0
    while i < len(ordered) or pending or backlog:
        if not pending and not backlog:
            clock = max(clock, ordered[i].time_s)
        while i < len(ordered) and ordered[i].time_s <= clock:
            arrive(ordered[i])
            i += 1
        if backlog:
            arrival_s, update = backlog.popleft()
            sid = update.segment_id
        elif pending:
            sid, (arrival_s, update) = pending.popitem(last=False)
        else:
            continue
        words = update.committed + (update.partial if include_partial else ())
        final = update.status == "final"
        source = SourceUpdate(sid, "".join(w.text for w in words).strip(), final, len(words))
        started, cpu_started = time.perf_counter(), time.process_time()
        results: dict[str, LanguageResult] = translator.translate(source)
        compute_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        clock += compute_s
        translations = {
            lang: as_translation(r, (clock - arrival_s) * 1000.0) for lang, r in results.items()
        }
        shown[sid] = translations
        costs.append(UpdateCost(
            sid, arrival_s, clock, compute_s, cpu_s, sum(r.prefilled for r in results.values()),
            sum(r.decode_steps for r in results.values()), final, len(words),
            {lang: r.stable_tokens for lang, r in results.items()},
        ))
        if final:
            emit(clock, update, translations)
            shown.pop(sid, None)
            latest.pop(sid, None)
        elif sid not in pending or pending[sid][1].status != "final":
            emit(clock, latest.get(sid, update), translations)
    out.sort(key=lambda e: e.time_s)
    return Simulation(tuple(_renumber(out)), tuple(costs))


def _renumber(emissions: list[Emission]) -> list[Emission]:
    revisions: dict[int, int] = {}
    renumbered = []
    for e in emissions:
        sid = e.update.segment_id
        rev = revisions.get(sid, 0)
        revisions[sid] = rev + 1
        renumbered.append(Emission(e.time_s, dataclasses.replace(e.update, revision=rev)))
    return renumbered


def word_shown_latencies(
    emissions: Sequence[Emission], costs: Sequence[UpdateCost], language: str
) -> list[float]:
    """Seconds from each committed source word to its translation being shown stable.

    A word's translation is taken to be the share of the sentence's final translation
    proportional to its position: word i of N is shown once ceil((i+1)/N * T) of the T
    final target tokens are stable. (Token alignment is unknown; this charges early
    words fairly and late ones with the wait for the sentence end.)
    """
    committed_at: dict[tuple[int, int], float] = {}
    for e in sorted(emissions, key=lambda e: e.time_s):
        for index in range(len(e.update.committed)):
            committed_at.setdefault((e.update.segment_id, index), e.time_s)
    by_segment: dict[int, list[UpdateCost]] = {}
    for cost in costs:
        by_segment.setdefault(cost.segment_id, []).append(cost)
    latencies: list[float] = []
    for sid, seg_costs in by_segment.items():
        final = next((c for c in seg_costs if c.final), None)
        if final is None or final.words == 0:
            continue
        total = final.stable_tokens.get(language, 0)
        if total == 0:
            continue  # nothing was translated: no word can be shown
        for index in range(final.words):
            need = math.ceil((index + 1) / final.words * total)
            shown = next(c.done_s for c in seg_costs
                         if c.stable_tokens.get(language, 0) >= need)
            start = committed_at.get((sid, index))
            if start is not None:
                latencies.append(max(shown - start, 0.0))
    return latencies


def timed_word_emissions(
    transcripts: Sequence[tuple[str, float]], gap_s: float = 0.3
) -> list[Emission]:
    """ASR-like revisions of `(transcript, duration_s)` clips played one after another:
    each clip is one segment, its words spread over its duration by length and committed
    one by one at their end; the last word's revision is the segment's final."""
    emissions: list[Emission] = []
    start_s = 0.0
    for sid, (transcript, duration_s) in enumerate(transcripts):
        texts = transcript.split()
        weights = [len(w) + 1 for w in texts]
        total = sum(weights) or 1
        words: list[Word] = []
        elapsed = 0
        for n, (text, weight) in enumerate(zip(texts, weights, strict=True)):
            word_start = start_s + duration_s * elapsed / total
            elapsed += weight
            word_end = start_s + duration_s * elapsed / total
            words.append(Word(" " + text, word_start, word_end))
            final = n == len(texts) - 1
            update = SegmentUpdate(sid, n, "final" if final else "partial", tuple(words), (),
                                   word_end)
            emissions.append(Emission(word_end, update))
        start_s += duration_s + gap_s
    return emissions
