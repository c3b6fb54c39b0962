"""`subtitled bench-startup`: real launches of `subtitled run`, timed to READY (the
sd_notify datagram), to the first caption and to translation being live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from subtitled.cli import main
from subtitled.tools.bench.startup import StartupRun, format_summary, summarise


def test_summary_takes_medians_and_says_never() -> None:
    runs = [StartupRun(1.0, 2.0, 0.3, None), StartupRun(3.0, 4.0, 0.3, None),
            StartupRun(2.0, 3.0, 0.3, None)]
    summary = summarise(runs)
    assert (summary["ready_s"], summary["first_caption_s"]) == (2.0, 3.0)
    assert summary["translation_live_s"] is None
    assert "to translation live                    never" in format_summary(summary)


@pytest.mark.slow
def test_a_launch_is_timed_from_start_to_ready_caption_and_translation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "startup.json"
    assert main(["bench-startup", "--runs", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    # The port is bound and models are loaded before READY; audio flows after it.
    assert 0 < report["ready_s"] <= report["first_caption_s"] < 60
    assert report["translation_live_s"] is not None  # the bundled model loads
    assert "to READY" in capsys.readouterr().out


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    assert main(["bench-startup", "--runs", "0"]) == 2
    assert main(["bench-startup", "--clip", str(tmp_path / "none.flac")]) == 2
