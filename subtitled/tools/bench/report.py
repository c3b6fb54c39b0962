"""The benchmark report: metrics per item and overall, as JSON and as a printed table.

`analyse` turns what the driver recorded into a `BenchResult` (pure: no clock, no I/O);
`to_json` is the report file's schema; `format_table` is what the command prints.

Report keys (top level): `items` (per-item detail), `audio_seconds`, `wer`, `offline_wer`,
`wer_standard` and `offline_wer_standard` (Whisper's English normaliser),
`latency_ms` and `partial_latency_ms` ({p50, p90} over committed source words),
`translation_latency_ms` ({p50, p90}, pooled over target languages), `flicker`, `bleu` and
`chrf` ({language: score}), `rtf`, `cpu_seconds`, `asr_cpu_s_per_audio_s`,
`translation_cpu_seconds`, `cpu_s_per_audio_s` (ASR and translation), `peak_rss_mb`
(of the streaming run, before the baseline model loads; it includes `bench_audio_mb`, the
decoded audio the benchmark holds), `max_lag_s`, plus the run's settings and `notes`
explaining any null. Definitions are in `subtitled.tools.bench.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from subtitled import SAMPLE_RATE_HZ
from subtitled.events import Word
from subtitled.tools.bench import metrics
from subtitled.tools.bench.driver import StreamRun
from subtitled.tools.bench.manifest import ManifestItem
from subtitled.tools.bench.metrics import Percentiles, WordErrors

SCHEMA_VERSION = 1
TABLE_ITEMS = 20
"""Print every item up to this many; beyond, only the worst by WER."""
WORST_ITEMS = 8


@dataclass(frozen=True)
class RunInfo:
    """How the benchmark was run: settings that go into the report verbatim."""

    manifest: str
    clock: str
    long_form: bool
    asr_model: str
    step_s: float
    beam_size: int
    threads: int
    targets: tuple[str, ...]
    translation_model: str | None
    cpu_s: float
    """Process CPU time of the streaming runs (not of the offline baseline)."""
    peak_rss_mb: float
    """Peak resident memory after the streaming runs (before the baseline model loads)."""
    profile: str = "performance"
    """The power profile benchmarked (`subtitled.power`)."""
    translation_cpu_s: float = 0.0
    """Process CPU time of the translator calls (0 without targets)."""


@dataclass(frozen=True)
class ItemResult:
    """One manifest item's transcript and timing."""

    name: str
    duration_s: float
    reference: str
    hypothesis: str
    errors: WordErrors
    offline_hypothesis: str | None
    offline_errors: WordErrors | None
    latency: Percentiles | None
    partial_latency: Percentiles | None
    words: int


@dataclass(frozen=True)
class TimedPoint:
    """A value at a position on the benchmark's audio timeline (for plots)."""

    timeline_s: float
    value: float


@dataclass(frozen=True)
class LanguageResult:
    """Translation quality and timing for one target language."""

    bleu: float | None
    chrf: float | None
    latencies_s: tuple[float, ...]
    references: int


@dataclass(frozen=True)
class BenchResult:
    """Everything the report, the table and the plot show."""

    info: RunInfo
    items: tuple[ItemResult, ...]
    audio_s: float
    errors: WordErrors
    offline_errors: WordErrors | None
    standard_errors: WordErrors
    """`errors` with Whisper's English normaliser (`metrics.standard_normalise`)."""
    offline_standard_errors: WordErrors | None
    latency: Percentiles | None
    partial_latency: Percentiles | None
    committed_words: int
    retractions: int
    compute_s: float
    max_lag_s: float | None
    languages: Mapping[str, LanguageResult]
    notes: tuple[str, ...]
    latencies: tuple[TimedPoint, ...]
    """Committed latency (s) of every word, at its end on the audio timeline."""
    partial_latencies: tuple[TimedPoint, ...]
    lags: tuple[TimedPoint, ...]

    @property
    def wer(self) -> float | None:
        return self.errors.rate

    @property
    def offline_wer(self) -> float | None:
        return self.offline_errors.rate if self.offline_errors is not None else None

    @property
    def flicker(self) -> float | None:
        return metrics.flicker(self.retractions, self.committed_words)

    @property
    def rtf(self) -> float | None:
        return self.compute_s / self.audio_s if self.audio_s > 0 else None

    @property
    def cpu_per_audio_s(self) -> float | None:
        return self.info.cpu_s / self.audio_s if self.audio_s > 0 else None

    @property
    def total_cpu_per_audio_s(self) -> float | None:
        """ASR and translation together, per second of audio."""
        total = self.info.cpu_s + self.info.translation_cpu_s
        return total / self.audio_s if self.audio_s > 0 else None

    @property
    def translation_latency(self) -> Percentiles | None:
        pooled = [t for lang in self.languages.values() for t in lang.latencies_s]
        return metrics.percentiles_ms(pooled)


def analyse(
    items: Sequence[ManifestItem],
    runs: Sequence[StreamRun],
    offline: Sequence[Sequence[Word]] | None,
    info: RunInfo,
) -> BenchResult:
    """Compute every metric from the recorded streams (and the offline baseline's words)."""
    item_results: list[ItemResult | None] = [None] * len(items)
    total = standard = WordErrors(0, 0, 0, 0)
    offline_total: WordErrors | None = WordErrors(0, 0, 0, 0) if offline is not None else None
    offline_standard = offline_total
    all_timings: list[tuple[float, metrics.WordTiming]] = []
    retractions = committed = 0
    lags: list[TimedPoint] = []
    for n, run in enumerate(runs):
        plan = run.plan
        stream_items = [items[i] for i in plan.items]
        reference = " ".join(i.transcript for i in stream_items)
        text = metrics.final_text(run.emissions)
        total += metrics.word_errors([reference], [text])
        standard += metrics.word_errors([reference], [text], metrics.standard_normalise)
        timings = metrics.word_timings(run.emissions)
        all_timings += [(plan.timeline_offset_s, t) for t in timings]
        committed += len(timings)
        retractions += metrics.count_retractions(run.emissions)
        lags += [TimedPoint(plan.timeline_offset_s + s.clock_s, s.lag_s) for s in run.lags]
        stream_offline = offline[n] if offline is not None else None
        if offline_total is not None and stream_offline is not None:
            offline_total += metrics.word_errors([reference], [_text(stream_offline)])
        if offline_standard is not None and stream_offline is not None:
            offline_standard += metrics.word_errors(
                [reference], [_text(stream_offline)], metrics.standard_normalise
            )
        # A word belongs to the item its speech ends in (a gap goes to the item before).
        # Not its middle: Whisper's alignment often starts a word early, in the pause.
        owner = metrics.assign_to_items([t.end_s for t in timings], plan.item_starts_s)
        offline_owner = (
            metrics.assign_to_items([w.end_s for w in stream_offline], plan.item_starts_s)
            if stream_offline is not None else []
        )
        for k, index in enumerate(plan.items):
            mine = [t for t, o in zip(timings, owner, strict=True) if o == k]
            hyp = " ".join(t.text.strip() for t in mine)
            offline_hyp = (
                " ".join(w.text.strip() for w, o in
                         zip(stream_offline, offline_owner, strict=True) if o == k)
                if stream_offline is not None else None
            )
            item = items[index]
            item_results[index] = ItemResult(
                name=item.name,
                duration_s=plan.item_durations_s[k],
                reference=item.transcript,
                hypothesis=hyp,
                errors=metrics.word_errors([item.transcript], [hyp]),
                offline_hypothesis=offline_hyp,
                offline_errors=(
                    metrics.word_errors([item.transcript], [offline_hyp])
                    if offline_hyp is not None else None
                ),
                latency=metrics.percentiles_ms([t.latency_s for t in mine]),
                partial_latency=metrics.percentiles_ms([t.partial_latency_s for t in mine]),
                words=len(mine),
            )
    languages, notes = _translation(items, runs, info)
    if offline is None:
        notes.append("offline baseline skipped (--no-offline): offline_wer is null")
    return BenchResult(
        info=info,
        items=tuple(r for r in item_results if r is not None),
        audio_s=sum(run.plan.duration_s for run in runs),
        errors=total,
        offline_errors=offline_total,
        standard_errors=standard,
        offline_standard_errors=offline_standard,
        latency=metrics.percentiles_ms([t.latency_s for _, t in all_timings]),
        partial_latency=metrics.percentiles_ms([t.partial_latency_s for _, t in all_timings]),
        committed_words=committed,
        retractions=retractions,
        compute_s=sum(run.compute_s for run in runs),
        max_lag_s=max((p.value for p in lags), default=None),
        languages=languages,
        notes=tuple(notes),
        latencies=tuple(TimedPoint(o + t.end_s, t.latency_s) for o, t in all_timings),
        partial_latencies=tuple(
            TimedPoint(o + t.end_s, t.partial_latency_s) for o, t in all_timings
        ),
        lags=tuple(lags),
    )


def _text(words: Sequence[Word]) -> str:
    return " ".join(w.text.strip() for w in words)


def _translation(
    items: Sequence[ManifestItem], runs: Sequence[StreamRun], info: RunInfo
) -> tuple[dict[str, LanguageResult], list[str]]:
    """BLEU/chrF per target over the streams whose items all have a reference."""
    notes: list[str] = []
    if not info.targets:
        return {}, notes
    if info.translation_model is None:
        notes.append(
            "no translation model configured (translation.model): bleu, chrf and "
            "translation_latency_ms are null"
        )
    results: dict[str, LanguageResult] = {}
    for lang in info.targets:
        refs: list[str] = []
        hyps: list[str] = []
        latencies: list[float] = []
        for run in runs:
            latencies += metrics.translation_latencies(run.emissions, lang)
            stream_items = [items[i] for i in run.plan.items]
            hyp = metrics.final_translation(run.emissions, lang)
            if hyp is None or not all(lang in i.references for i in stream_items):
                continue
            refs.append(" ".join(i.references[lang] for i in stream_items))
            hyps.append(hyp)
        if info.translation_model is not None:
            if not any(metrics.final_translation(r.emissions, lang) for r in runs):
                notes.append(f"the pipeline produced no translation into {lang!r}")
            elif not any(lang in i.references for i in items):
                notes.append(f"no reference translations into {lang!r}: bleu and chrf are null")
        results[lang] = LanguageResult(
            bleu=metrics.bleu(refs, hyps),
            chrf=metrics.chrf(refs, hyps),
            latencies_s=tuple(latencies),
            references=len(refs),
        )
    return results, notes


# ------------------------------------------------------------------------ JSON


def to_json(result: BenchResult) -> dict[str, Any]:
    """The report file's content (see the module docstring for the keys)."""
    info = result.info
    return {
        "schema": SCHEMA_VERSION,
        "manifest": info.manifest,
        "clock": info.clock,
        "long_form": info.long_form,
        "settings": {
            "asr_model": info.asr_model,
            "step_s": info.step_s,
            "profile": info.profile,
            "beam_size": info.beam_size,
            "threads": info.threads,
            "translation_model": info.translation_model,
            "targets": list(info.targets),
        },
        "normalisation": metrics.NORMALISATION,
        "items": [_item_json(item) for item in result.items],
        "audio_seconds": round(result.audio_s, 2),
        "wer": _round(result.wer, 4),
        "offline_wer": _round(result.offline_wer, 4),
        "standard_normalisation": metrics.STANDARD_NORMALISATION,
        "wer_standard": _round(result.standard_errors.rate, 4),
        "offline_wer_standard": _round(
            result.offline_standard_errors.rate if result.offline_standard_errors else None, 4
        ),
        "latency_ms": _percentiles(result.latency),
        "partial_latency_ms": _percentiles(result.partial_latency),
        "translation_latency_ms": _percentiles(result.translation_latency),
        "flicker": _round(result.flicker, 4),
        "bleu": _by_language(result, "bleu"),
        "chrf": _by_language(result, "chrf"),
        "rtf": _round(result.rtf, 4),
        "cpu_seconds": round(info.cpu_s, 2),
        "asr_cpu_s_per_audio_s": _round(result.cpu_per_audio_s, 4),
        "translation_cpu_seconds": round(info.translation_cpu_s, 2),
        "cpu_s_per_audio_s": _round(result.total_cpu_per_audio_s, 4),
        "peak_rss_mb": round(info.peak_rss_mb, 1),
        # The decoded audio the benchmark itself holds (float32), part of peak_rss_mb.
        "bench_audio_mb": round(result.audio_s * SAMPLE_RATE_HZ * 4 / 2**20, 1),
        "max_lag_s": _round(result.max_lag_s, 3),
        "committed_words": result.committed_words,
        "retracted_words": result.retractions,
        "word_errors": _errors_json(result.errors),
        "offline_word_errors": (
            _errors_json(result.offline_errors) if result.offline_errors is not None else None
        ),
        "notes": list(result.notes),
    }


def _item_json(item: ItemResult) -> dict[str, Any]:
    return {
        "path": item.name,
        "duration_s": round(item.duration_s, 3),
        "wer": _round(item.errors.rate, 4),
        "offline_wer": _round(item.offline_errors.rate if item.offline_errors else None, 4),
        "latency_ms": _percentiles(item.latency),
        "partial_latency_ms": _percentiles(item.partial_latency),
        "words": item.words,
        "reference": item.reference,
        "hypothesis": item.hypothesis,
        "offline_hypothesis": item.offline_hypothesis,
    }


def _errors_json(errors: WordErrors) -> dict[str, int]:
    return {
        "substitutions": errors.substitutions,
        "deletions": errors.deletions,
        "insertions": errors.insertions,
        "reference_words": errors.reference_words,
    }


def _by_language(result: BenchResult, key: str) -> dict[str, float | None] | None:
    if not result.languages:
        return None
    return {lang: _round(getattr(r, key), 2) for lang, r in result.languages.items()}


def _percentiles(p: Percentiles | None) -> dict[str, float] | None:
    return p.as_json() if p is not None else None


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


# ----------------------------------------------------------------------- table


def format_table(result: BenchResult) -> str:
    """A plain-text summary, then the items (all of them, or the worst by WER)."""
    info = result.info
    mode = "long-form" if info.long_form else "per item"
    lines = [
        f"subtitled bench: {info.manifest}: {len(result.items)} items, "
        f"{result.audio_s:.1f} s of audio, {info.clock} clock, {mode}",
        f"  ASR {info.asr_model}, step {info.step_s:g} s, beam {info.beam_size}, "
        f"{info.threads} thread(s); {info.profile} profile",
        "",
    ]
    rows = [
        ("WER (streaming)", _fmt(result.wer, "{:.4f}")
         + f"  ({result.errors.errors}/{result.errors.reference_words} words)"),
        ("WER (offline, whole clip, beam 5)", _fmt(result.offline_wer, "{:.4f}")),
        ("WER, Whisper normaliser: streaming / offline",
         _fmt(result.standard_errors.rate, "{:.4f}") + " / "
         + _fmt(result.offline_standard_errors.rate
                if result.offline_standard_errors else None, "{:.4f}")),
        ("latency p50 / p90, committed", _fmt_p(result.latency)),
        ("latency p50 / p90, first shown", _fmt_p(result.partial_latency)),
        ("translation latency p50 / p90", _fmt_p(result.translation_latency)),
        ("flicker (retracted per committed)", _fmt(result.flicker, "{:.3f}")
         + f"  ({result.retractions}/{result.committed_words})"),
        ("BLEU", _fmt_lang(result, "bleu")),
        ("chrF", _fmt_lang(result, "chrf")),
        ("RTF (ASR wall / audio)", _fmt(result.rtf, "{:.3f}")),
        ("CPU seconds (per audio second)", f"{info.cpu_s:.1f}  ("
         + _fmt(result.cpu_per_audio_s, "{:.3f}") + ")"),
        ("translation CPU s; ASR + translation per audio s",
         f"{info.translation_cpu_s:.1f}; " + _fmt(result.total_cpu_per_audio_s, "{:.3f}")),
        ("peak RSS", f"{info.peak_rss_mb:.0f} MB"),
        ("max lag behind real time", _fmt(result.max_lag_s, "{:.2f} s")),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    items = list(result.items)
    heading = "items"
    if len(items) > TABLE_ITEMS:
        items = sorted(items, key=lambda i: -(i.errors.rate or 0.0))[:WORST_ITEMS]
        heading = f"the {len(items)} items with the highest WER (of {len(result.items)})"
    name_width = min(max(len(i.name) for i in items), 48)
    lines += [
        "",
        f"  {heading}:",
        f"  {'path':<{name_width}} {'dur s':>6} {'WER':>6} {'off':>6} {'p50 ms':>7} {'p90 ms':>7}",
    ]
    for item in items:
        p = item.latency
        lines.append(
            f"  {_clip(item.name, name_width):<{name_width}} {item.duration_s:>6.1f} "
            f"{_fmt(item.errors.rate, '{:.3f}'):>6} "
            f"{_fmt(item.offline_errors.rate if item.offline_errors else None, '{:.3f}'):>6} "
            f"{_fmt(p.p50_ms if p else None, '{:.0f}'):>7} "
            f"{_fmt(p.p90_ms if p else None, '{:.0f}'):>7}"
        )
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str) -> str:
    return pattern.format(value) if value is not None else "n/a"


def _fmt_p(p: Percentiles | None) -> str:
    return f"{p.p50_ms:.0f} / {p.p90_ms:.0f} ms" if p is not None else "n/a"


def _fmt_lang(result: BenchResult, key: str) -> str:
    if not result.languages:
        return "n/a (no --target)"
    return ", ".join(
        f"{lang} {_fmt(getattr(r, key), '{:.1f}')}" for lang, r in result.languages.items()
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]
