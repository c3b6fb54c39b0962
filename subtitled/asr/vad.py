"""Voice activity: Silero VAD (the ONNX model faster-whisper bundles), run incrementally.

`SileroStream` is the model shell: it keeps the LSTM state and the 64-sample context
between calls, so each new block of audio costs only its own windows.
`SpeechTracker` is the pure core: hysteresis over the per-window probabilities
(Silero's own `threshold` / `neg_threshold` scheme), reporting where speech is and
when a pause long enough to close a segment has begun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from subtitled import SAMPLE_RATE_HZ
from subtitled.errors import ConfigError
from subtitled.translate.contract import CPU_PROVIDER

WINDOW_SAMPLES = 512  # Silero v5/v6 at 16 kHz: 32 ms windows
CONTEXT_SAMPLES = 64
WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ


@dataclass(frozen=True)
class VadConfig:
    """Thresholds on Silero's speech probability, and what counts as a pause."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    pause_s: float = 0.5
    """Silence this long after speech closes the current segment."""

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ConfigError(
                f"streaming.vad: threshold {self.threshold} and neg_threshold "
                f"{self.neg_threshold} are invalid; expected 0 < neg_threshold <= threshold < 1"
            )
        if self.pause_s <= 0.0:
            raise ConfigError(f"streaming.vad.pause_s: {self.pause_s} is invalid; expected > 0")


class SileroStream:
    """Silero VAD over a stream: feed any number of samples, get one probability per window."""

    def __init__(self) -> None:
        import onnxruntime
        from faster_whisper.utils import get_assets_path

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
        self._session = onnxruntime.InferenceSession(
            path, providers=[CPU_PROVIDER], sess_options=options
        )
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._leftover = np.zeros(0, dtype=np.float32)

    def __call__(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        audio = np.concatenate([self._leftover, samples.astype(np.float32, copy=False)])
        n_windows = len(audio) // WINDOW_SAMPLES
        self._leftover = audio[n_windows * WINDOW_SAMPLES :]
        if n_windows == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[: n_windows * WINDOW_SAMPLES].reshape(n_windows, WINDOW_SAMPLES)
        # Each window is preceded by the last 64 samples of the one before it.
        contexts = np.empty((n_windows, CONTEXT_SAMPLES), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = windows[:-1, -CONTEXT_SAMPLES:]
        self._context = windows[-1, -CONTEXT_SAMPLES:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)


class SpeechTracker:
    """Hysteresis over VAD probabilities; knows where speech was and when a pause began."""

    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self._speaking = False
        self._window_index = 0
        self._flags: list[bool] = []  # speech flag per window, from `_flags_start`
        self._flags_start = 0
        self.last_speech_end_s = 0.0
        self.heard_speech = False

    @property
    def time_s(self) -> float:
        """Audio time up to which probabilities have been seen."""
        return self._window_index * WINDOW_S

    def push(self, probabilities: npt.NDArray[np.float32]) -> None:
        for p in probabilities.tolist():
            if p >= self.config.threshold:
                self._speaking = True
            elif p < self.config.neg_threshold:
                self._speaking = False
            self._flags.append(self._speaking)
            self._window_index += 1
            if self._speaking:
                self.last_speech_end_s = self._window_index * WINDOW_S
                self.heard_speech = True

    @property
    def speaking(self) -> bool:
        return self._speaking

    def silence_s(self) -> float:
        """How long it has been silent since the last speech (0 while speaking)."""
        return 0.0 if self._speaking else self.time_s - self.last_speech_end_s

    def speech_ratio(self, start_s: float, end_s: float) -> float:
        """The fraction of windows between two audio times that held speech."""
        first = max(int(start_s / WINDOW_S) - self._flags_start, 0)
        last = max(int(np.ceil(end_s / WINDOW_S)) - self._flags_start, first + 1)
        span = self._flags[first:last]
        return sum(span) / len(span) if span else 0.0

    def has_speech(self, start_s: float, end_s: float) -> bool:
        return self.speech_ratio(start_s, end_s) > 0.0

    def forget_before(self, time_s: float) -> None:
        """Drop flags before an audio time no one will ask about again."""
        drop = int(time_s / WINDOW_S) - self._flags_start
        if drop > 0:
            del self._flags[:drop]
            self._flags_start += drop
