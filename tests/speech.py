"""The shared speech clips and the text normalisation every WER in the tests uses."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from pulse import SPEECH

_KEEP = re.compile(r"[^a-z0-9' ]+")


def normalise(text: str) -> str:
    """Lower-case, keep [a-z0-9'] and spaces (the shared data README's normalisation)."""
    return " ".join(_KEEP.sub(" ", text.lower()).split())


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
    import jiwer

    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
