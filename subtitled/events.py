"""Domain data that flows between pipeline stages.

capture yields `AudioChunk`s; asr yields `Word`s grouped into `SegmentUpdate`s;
publish turns `SegmentUpdate`s and `StatusUpdate`s into wire messages.
All times ending in `_s` are audio time: seconds since the start of the stream.
Wall-clock times are `*_unix` (seconds since the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

SegmentStatus = Literal["partial", "final"]
CaptureState = Literal["starting", "running", "lost", "ended"]


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 samples at `SAMPLE_RATE_HZ`, starting at `start_s` in the stream."""

    samples: npt.NDArray[np.float32]
    start_s: float

    @property
    def duration_s(self) -> float:
        from subtitled import SAMPLE_RATE_HZ

        return len(self.samples) / SAMPLE_RATE_HZ

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Word:
    """One recognised word with its audio-time span. `text` keeps Whisper's leading space."""

    text: str
    start_s: float
    end_s: float
    probability: float = 1.0


@dataclass(frozen=True)
class Translation:
    """One target language's text for a segment: `stable` is never retracted once sent.

    `latency_ms`: from the ASR revision this translates to the translation being ready
    (queueing and compute); `compute_ms`: the model's share of it. None when unknown.
    """

    stable: str
    unstable: str = ""
    latency_ms: float | None = None
    compute_ms: float | None = None


@dataclass(frozen=True)
class SegmentUpdate:
    """A new revision of one caption segment (a sentence, or a span between pauses).

    `committed` words never change in later revisions of the same segment; `partial`
    words are the unstable tail and may be revised. A `final` revision has no partial
    words and is the last one for `segment_id`.
    """

    segment_id: int
    revision: int
    status: SegmentStatus
    committed: tuple[Word, ...]
    partial: tuple[Word, ...]
    emitted_unix: float
    translations: dict[str, Translation] = field(default_factory=dict)
    language: str | None = None
    """The language of the words (a Whisper code), when the ASR knows it."""
    spoken_language: str | None = None
    """The language spoken, when it differs from `language` (Whisper's translate task)."""
    retranslated: bool = False
    """This is revision `revision` again (the same words, already published) with new
    translations: the feed sends it as a `translation` message, not a new revision."""

    @property
    def words(self) -> tuple[Word, ...]:
        return self.committed + self.partial

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words).strip()

    @property
    def committed_text(self) -> str:
        return "".join(w.text for w in self.committed).strip()

    @property
    def audio_start_s(self) -> float:
        return self.words[0].start_s if self.words else 0.0

    @property
    def audio_end_s(self) -> float:
        return self.words[-1].end_s if self.words else 0.0


@dataclass(frozen=True)
class StatusUpdate:
    """What the daemon is doing now: capture state and a human-readable detail."""

    capture: CaptureState
    detail: str = ""
    overflow_count: int = 0
