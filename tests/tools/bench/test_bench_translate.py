"""The translate stage on the benchmark clock, and `subtitled bench-translate`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from subtitled.tools.bench.translate_sim import simulate, timed_word_emissions, word_shown_latencies
from subtitled.translate.stream import LanguageResult, SourceUpdate


class SlowEcho:
    """Echoes the source as its translation, taking `delay_s` per call."""

    name = "echo"
    languages = ("de",)

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: list[SourceUpdate] = []

    def translate(self, update: SourceUpdate) -> dict[str, LanguageResult]:
        time.sleep(self.delay_s)
        self.calls.append(update)
        n = len(update.text.split())
        # Stable: all but the last word, unless final.
        stable = n if update.final else max(n - 1, 0)
        return {"de": LanguageResult(update.text, "", stable, n, n, self.delay_s, update.final)}

    def reset(self) -> None:
        pass


def test_word_emissions_spread_words_over_each_clip() -> None:
    emissions = timed_word_emissions([("one two", 1.0), ("three", 0.5)], gap_s=0.5)
    assert [(round(e.time_s, 3), e.update.segment_id, e.update.status) for e in emissions] == [
        (0.5, 0, "partial"), (1.0, 0, "final"), (2.0, 1, "final")
    ]
    assert emissions[1].update.committed_text == "one two"


def test_a_fast_translator_sees_every_commit() -> None:
    emissions = timed_word_emissions([("a b c d", 4.0)])
    sim = simulate(emissions, SlowEcho(0.0))
    assert [c.words for c in sim.costs] == [1, 2, 3, 4]
    finals = [e for e in sim.emissions if e.update.status == "final"]
    assert len(finals) == 1 and finals[0].update.translations["de"].stable == "a b c d"
    # Word i is stable once word i+1 is committed (or at the final): about 1 s later.
    latencies = word_shown_latencies(sim.emissions, sim.costs, "de")
    assert len(latencies) == 4 and all(0.9 < x < 1.1 for x in latencies[:3])
    assert latencies[3] < 0.1


def test_a_slow_translator_skips_superseded_commits_but_not_finals() -> None:
    emissions = timed_word_emissions([("a b c d e f g h", 0.08), ("next", 0.01)], gap_s=0.0)
    sim = simulate(emissions, SlowEcho(0.05))
    assert sim.costs[0].words == 1 and len(sim.costs) < 9
    assert [c.final for c in sim.costs].count(True) == 2
    times = [e.time_s for e in sim.emissions]
    assert times == sorted(times)


@pytest.mark.slow
def test_bench_translate_command(tiny_model_dir: Path, tmp_path: Path) -> None:
    from subtitled.cli import main

    out = tmp_path / "report.json"
    code = main(["bench-translate", "--translation-model", str(tiny_model_dir),
                 "--minutes", "0.5", "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["incremental"]["prefilled_tokens"] < report["baseline"]["prefilled_tokens"]
    assert report["ratios"]["prefilled_tokens"] > 1
    assert set(report["goals"]) == {
        "prefilled_tokens_10x_fewer", "compute_5x_less",
        "last_minute_latency_within_1.2x_first", "word_shown_p50_within_1s",
    }


def test_finals_only_translates_each_segment_once() -> None:
    """The battery profile: one translator call per segment, its final; partials shown
    untranslated until then."""
    emissions = timed_word_emissions([("a b c d", 4.0), ("e f", 2.0)])
    sim = simulate(emissions, SlowEcho(0.0), finals_only=True)
    assert [(c.words, c.final) for c in sim.costs] == [(4, True), (2, True)]
    partials = [e for e in sim.emissions if e.update.status == "partial"]
    assert partials and all(not e.update.translations for e in partials)
    finals = [e.update.translations["de"].stable for e in sim.emissions
              if e.update.status == "final"]
    assert finals == ["a b c d", "e f"]


@pytest.mark.slow
def test_bench_fills_translation_figures(tiny_model_dir: Path, tmp_path: Path) -> None:
    from subtitled.cli import main

    manifest = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "speech" / \
        "manifest.tsv"
    refs = tmp_path / "refs.tsv"
    refs.write_text("path\tref_de\nljspeech/LJ001-0002.flac\tindem sie vergleichsweise "
                    "modern ist.\nljspeech/LJ001-0004.flac\terzeugte die Blockbücher.\n",
                    encoding="utf-8")
    out = tmp_path / "report.json"
    code = main(["bench", str(manifest), "--filter", "LJ001-0002", "--filter", "LJ001-0004",
                 "--no-offline",
                 "--target", "de", "--translation-model", str(tiny_model_dir),
                 "--refs", str(refs), "--set", "translation.threads=1", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["translation_model"].startswith("random-gemma4_text")
    # Random weights translate into noise (often nothing): the scores are computed, ~0.
    assert report["bleu"]["de"] is not None and report["chrf"]["de"] is not None
    # (translation_latency_ms needs a non-empty translation, which this random model may
    # not give; tests of `simulate` above cover the timing.)
    assert "translation_latency_ms" in report
    assert report["translation_cpu_seconds"] > 0
    assert report["cpu_s_per_audio_s"] > report["asr_cpu_s_per_audio_s"]
    assert report["settings"]["profile"] == "performance"


def test_every_update_mode_translates_every_commit() -> None:
    emissions = timed_word_emissions([("a b c d e f g h", 0.08)])
    sim = simulate(emissions, SlowEcho(0.02), coalesce=False)
    assert [c.words for c in sim.costs] == list(range(1, 9))
    assert all(c.cpu_s >= 0 for c in sim.costs)
