"""Audio (or video) files, decoded by PyAV to 16 kHz mono float32.

`FileDecoder` is the synchronous decoder (PyAV + `av.AudioResampler`); `file_chunks` is the
async shell that runs it in a worker thread a step at a time and yields fixed-size chunks,
paced in real time or as fast as the consumer takes them. `decode_file` decodes a whole
file at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from subtitled import SAMPLE_RATE_HZ
from subtitled.capture.chunking import FloatArray, Pacer, Rechunker, block_samples_for, release
from subtitled.errors import AudioDecodeError
from subtitled.events import AudioChunk, CaptureState, StatusUpdate

log = logging.getLogger(__name__)

FAST_STEP_S = 10.0
"""Audio decoded per worker-thread step when not pacing: few thread hops, short steps."""


class FileDecoder:
    """Decodes the first audio stream of `path` in steps; thread-safe `read` and `close`.

    Every failure is an `AudioDecodeError` naming the path and the reason: a missing file,
    a directory, a file FFmpeg cannot parse, a file without an audio stream, or corrupt
    data met mid-stream.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._container: Any = None
        self._frames: Iterator[FloatArray] | None = None
        self._done = False

    def _open(self) -> Iterator[FloatArray]:
        try:
            import av
        except ImportError as exc:
            raise AudioDecodeError(f"cannot decode {self.path}: PyAV is not installed") from exc
        if not self.path.exists():
            raise AudioDecodeError(f"cannot decode {self.path}: no such file")
        if self.path.is_dir():
            raise AudioDecodeError(f"cannot decode {self.path}: it is a directory")
        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError) as exc:
            raise AudioDecodeError(f"cannot decode {self.path}: {_reason(exc)}") from exc
        self._container = container
        if not container.streams.audio:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
            raise AudioDecodeError(
                f"cannot decode {self.path}: it has no audio stream "
                f"(format {container.format.name!r}, streams: {kinds})"
            )
        return self._decode(av, container, container.streams.audio[0])

    def _decode(self, av: Any, container: Any, stream: Any) -> Iterator[FloatArray]:
        # FFmpeg's own downmix to mono (swresample's matrix: equal stereo channels sum at
        # -3 dB each) and resampler; float output is not clipped.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
        n_samples = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    n_samples += out.samples
                    yield _samples(out)
            for out in resampler.resample(None):  # flush the resampler's delay line
                n_samples += out.samples
                yield _samples(out)
        except av.FFmpegError as exc:
            raise AudioDecodeError(f"cannot decode {self.path}: {_reason(exc)}") from exc
        if n_samples == 0:
            raise AudioDecodeError(f"cannot decode {self.path}: its audio stream has no samples")

    def read(self, min_samples: int) -> FloatArray | None:
        """At least `min_samples` more samples (fewer at the end), or None when finished."""
        with self._lock:
            if self._done:
                return None
            if self._frames is None:
                try:
                    self._frames = self._open()
                except BaseException:
                    self._close_locked()
                    raise
            parts: list[FloatArray] = []
            n = 0
            try:
                while n < min_samples:
                    part = next(self._frames, None)
                    if part is None:
                        self._close_locked()
                        break
                    parts.append(part)
                    n += len(part)
            except BaseException:
                self._close_locked()
                raise
            if not parts:
                return None
            return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._done = True
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> FileDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def probe_file(path: Path | str) -> None:
    """Raise the `AudioDecodeError` that decoding `path` would start with (no such file, not
    a media file, no audio stream) without decoding any audio: a check before a run starts."""
    decoder = FileDecoder(path)
    try:
        decoder._open()
    finally:
        decoder.close()


def decode_file(path: Path | str) -> FloatArray:
    """The whole first audio stream of `path` as 16 kHz mono float32 (blocking)."""
    with FileDecoder(path) as decoder:
        parts: list[FloatArray] = []
        while (part := decoder.read(SAMPLE_RATE_HZ * 60)) is not None:
            parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


async def file_chunks(
    path: Path | str,
    *,
    realtime: bool = True,
    block_s: float = 0.1,
    on_status: Callable[[StatusUpdate], None] | None = None,
    pacer: Pacer | None = None,
) -> AsyncGenerator[AudioChunk, None]:
    """Chunks of `block_s` from a file; the last one may be shorter.

    With `realtime`, chunk [t, t + block_s) is released at `t + block_s` after the start,
    like a live source; without it, as fast as the consumer takes them.
    """
    block_samples = block_samples_for(block_s)
    step_samples = block_samples if realtime else round(FAST_STEP_S * SAMPLE_RATE_HZ)
    decoder = FileDecoder(path)
    rechunker = Rechunker(block_samples)
    paced = (pacer if pacer is not None else Pacer()) if realtime else None

    def status(state: CaptureState, detail: str) -> None:
        if on_status is not None:
            on_status(StatusUpdate(capture=state, detail=detail))

    status("starting", f"file {decoder.path}")
    running = False
    try:
        while True:
            samples = await asyncio.to_thread(decoder.read, step_samples)
            if samples is None:
                break
            if not running:
                running = True
                status("running", f"file {decoder.path}")
            for chunk in rechunker.push(samples):
                yield await release(chunk, paced)
        for chunk in rechunker.flush():
            yield await release(chunk, paced)
        log.info("file %s ended after %.2f s of audio", decoder.path, rechunker.end_s)
        status("ended", f"file {decoder.path}")
    finally:
        # Waits for a read still running in a worker thread (cancellation) before closing.
        await asyncio.to_thread(decoder.close)


def _samples(frame: Any) -> FloatArray:
    # Packed 'flt' mono: to_ndarray() is (1, n).
    out: FloatArray = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    return out


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the errno prefix and the repeated path."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)
