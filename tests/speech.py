"""The shared speech clips and the text normalisation every WER in the tests uses."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pulse import SPEECH

# The one normalisation (lower-case, keep [a-z0-9'] and spaces) lives in the bench.
from subtitled.tools.bench.metrics import normalise

__all__ = ["Clip", "clips", "normalise", "wer"]


@dataclass(frozen=True)
class Clip:
    path: Path
    duration_s: float
    transcript: str


def clips() -> list[Clip]:
    """Every clip in `shared/data/speech/manifest.tsv`, in manifest order."""
    with (SPEECH / "manifest.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Clip(SPEECH / r["path"], float(r["duration_s"]), r["transcript"]) for r in rows]


def wer(references: list[str], hypotheses: list[str]) -> float:
    from subtitled.tools.bench.metrics import wer as bench_wer

    value = bench_wer(references, hypotheses)
    assert value is not None, "no reference words"
    return value
