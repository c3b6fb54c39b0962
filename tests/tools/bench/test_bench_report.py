"""The report from hand-made recorded streams: per-item mapping, JSON keys, table, plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from subtitled import SAMPLE_RATE_HZ
from subtitled.events import SegmentUpdate, Word
from subtitled.tools.bench.driver import LagSample, StreamPlan, StreamRun
from subtitled.tools.bench.manifest import ManifestItem
from subtitled.tools.bench.metrics import Emission
from subtitled.tools.bench.plot import write_plot
from subtitled.tools.bench.report import RunInfo, analyse, format_table, to_json

TOP_LEVEL_KEYS = {
    "items", "audio_seconds", "wer", "offline_wer", "latency_ms", "partial_latency_ms",
    "translation_latency_ms", "flicker", "bleu", "chrf", "rtf", "cpu_seconds",
    "asr_cpu_s_per_audio_s", "peak_rss_mb", "max_lag_s", "notes",
}


def info(*, long_form: bool, targets: tuple[str, ...] = ()) -> RunInfo:
    return RunInfo("m.tsv", "simulated", long_form, "fake", 0.5, 1, 1, targets, None, 2.0, 300.0)


def items() -> list[ManifestItem]:
    return [
        ManifestItem(Path("/a.flac"), "a.flac", 2.0, "The cat sat.", references={"de": "x"}),
        ManifestItem(Path("/b.flac"), "b.flac", 1.0, "A dog ran."),
    ]


def final(time_s: float, segment_id: int, words: list[tuple[str, float, float]]) -> Emission:
    committed = tuple(Word(t, s, e) for t, s, e in words)
    return Emission(time_s, SegmentUpdate(segment_id, 1, "final", committed, (), 0.0))


def long_form_run() -> StreamRun:
    # item a: 0-2 s; gap; item b starts at 2.3 s
    audio = np.zeros(round(3.3 * SAMPLE_RATE_HZ), np.float32)
    plan = StreamPlan((0, 1), (0.0, 2.3), (2.0, 1.0), audio, 0.0)
    emissions = (
        Emission(0.9, SegmentUpdate(0, 0, "partial", (), (Word(" The", 0.1, 0.4),), 0.0)),
        final(2.0, 0, [(" The", 0.1, 0.4), (" cat", 0.5, 0.9), (" sat.", 1.0, 1.5)]),
        # one segment across the item boundary: "A" ends in the gap; "dog" starts in
        # the gap (as Whisper's alignment often has it) but ends in item b
        final(3.5, 1, [(" fat", 1.7, 2.0), (" A", 2.0, 2.25), (" dog", 2.2, 2.9),
                       (" ran.", 2.9, 3.2)]),
    )
    return StreamRun(plan, emissions, 0.66, 1.0, (LagSample(2.0, 0.5), LagSample(3.5, 0.3)))


def test_long_form_words_go_to_the_item_they_were_spoken_in() -> None:
    offline = [[Word(" The", 0.1, 0.4), Word(" cat", 0.5, 0.9), Word(" sat.", 1.0, 1.5),
                Word(" A", 2.3, 2.4), Word(" dog", 2.5, 2.9), Word(" ran", 2.9, 3.2)]]
    result = analyse(items(), [long_form_run()], offline, info(long_form=True))
    a, b = result.items
    # "A" ends in the gap: it belongs to item a; "dog" ends in item b
    assert a.hypothesis == "The cat sat. fat A"
    assert b.hypothesis == "dog ran."
    assert a.errors.rate == pytest.approx(2 / 3)  # two insertions
    assert b.errors.rate == pytest.approx(1 / 3)  # "a" deleted
    # the stream as a whole: "the cat sat fat a dog ran" against "the cat sat a dog ran"
    assert result.wer == pytest.approx(1 / 6)
    assert result.offline_wer == 0.0
    assert a.offline_hypothesis == "The cat sat."
    assert result.committed_words == 7
    assert result.retractions == 0
    assert result.max_lag_s == 0.5
    assert result.rtf == pytest.approx(0.66 / 3.3)
    # latencies: The 2.0-0.4, cat 2.0-0.9, sat 2.0-1.5; b's words 3.5 - end
    latencies = sorted(p.value for p in result.latencies)
    assert latencies == pytest.approx(sorted([1.6, 1.1, 0.5, 1.5, 1.25, 0.6, 0.3]))
    assert result.partial_latency is not None and result.latency is not None
    # "The" was shown at 0.9: first-shown latency 0.5, where its committed latency is 1.6
    partial = sorted(p.value for p in result.partial_latencies)
    assert partial == pytest.approx(sorted([0.5, 1.1, 0.5, 1.5, 1.25, 0.6, 0.3]))
    # item b: dog 3.5 - 2.9, ran 3.5 - 3.2: median 0.45 s
    assert b.latency is not None and b.latency.p50_ms == pytest.approx(450.0)


def test_json_has_every_key_and_is_serialisable() -> None:
    result = analyse(items(), [long_form_run()], None, info(long_form=True, targets=("de",)))
    report = to_json(result)
    assert set(report) >= TOP_LEVEL_KEYS
    json.dumps(report)  # plain data only
    assert report["offline_wer"] is None
    assert report["bleu"] == {"de": None} and report["chrf"] == {"de": None}
    assert report["translation_latency_ms"] is None
    assert any("no translation model" in n for n in report["notes"])
    assert any("--no-offline" in n for n in report["notes"])
    assert set(report["latency_ms"]) == {"p50", "p90"}
    assert report["items"][0]["path"] == "a.flac"
    assert set(report["items"][0]) >= {"path", "duration_s", "wer", "latency_ms"}


def test_without_targets_bleu_is_null() -> None:
    report = to_json(analyse(items(), [long_form_run()], None, info(long_form=True)))
    assert report["bleu"] is None and report["chrf"] is None


def test_table_and_plot(tmp_path: Path) -> None:
    result = analyse(items(), [long_form_run()], None, info(long_form=True))
    table = format_table(result)
    assert "WER (streaming)" in table and "0.1667" in table
    assert "a.flac" in table and "b.flac" in table
    path = tmp_path / "report.png"
    write_plot(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_stream_reports_nulls(tmp_path: Path) -> None:
    audio = np.zeros(SAMPLE_RATE_HZ, np.float32)
    run = StreamRun(StreamPlan((0,), (0.0,), (1.0,), audio, 0.0), (), 0.1, 0.1, ())
    only = [items()[0]]
    result = analyse(only, [run], None, info(long_form=False))
    assert result.wer == 1.0  # everything deleted
    assert result.latency is None and result.flicker is None and result.max_lag_s is None
    report = to_json(result)
    assert report["latency_ms"] is None
    write_plot(result, tmp_path / "empty.png")
    assert "n/a" in format_table(result)
