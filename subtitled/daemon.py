"""The daemon's lifecycle, in uvicorn's order: start, wait for the stop event, drain, close.

`Daemon.start` loads the models and binds the port; `Daemon.serve` runs the
pipeline until the source ends or a stop is requested; `Daemon.close` finalises
open segments (the pipeline drains the audio it has) and closes the server within
a timeout. Signal handlers only call `request_stop`; a second signal forces exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from subtitled.asr.stream import StreamingAsr
from subtitled.asr.whisper import WhisperTranscriber
from subtitled.capture import SourceSpec, open_source
from subtitled.config import Config
from subtitled.events import AudioChunk, SegmentUpdate, StatusUpdate
from subtitled.pipeline import Pipeline, PipelineStats, QueuePolicy, SegmentSink
from subtitled.publish import ServiceInfo, SubtitleServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What one run of the daemon does, beyond the configuration."""

    source: SourceSpec
    realtime: bool = True
    serve: bool = True
    """Start the WebSocket server (off for `transcribe`)."""
    drain_timeout_s: float = 5.0


class Daemon:
    """One capture source, one ASR, the subtitle server, and any extra sinks."""

    def __init__(
        self,
        config: Config,
        options: RunOptions,
        sinks: Sequence[SegmentSink] = (),
        status_sinks: Sequence[Callable[[StatusUpdate], None]] = (),
    ) -> None:
        self.config = config
        self.options = options
        self._extra_sinks = list(sinks)
        self._status_sinks = list(status_sinks)
        self.server: SubtitleServer | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._asr: StreamingAsr | None = None

    def service_info(self, asr_name: str) -> ServiceInfo:
        translation = self.config.translation
        return ServiceInfo(
            asr_model=asr_name,
            translation_model=translation.model,
            source_language=self.config.asr.language,
            target_languages=translation.targets if translation.model else (),
        )

    async def start(self) -> None:
        """Load the ASR model (in a thread: it takes a second) and bind the server."""
        transcriber = await asyncio.to_thread(WhisperTranscriber, self.config.asr)
        self._asr = await asyncio.to_thread(StreamingAsr, transcriber, self.config.streaming)
        if self.options.serve:
            self.server = SubtitleServer(self.service_info(transcriber.name), self.config.server)
            await self.server.start()

    def request_stop(self) -> None:
        """Signal handler body: first call stops gracefully, the second exits at once."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop request: exiting without draining")
            os._exit(130)
        log.info("stopping: finishing the audio already captured")
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    async def serve(self) -> PipelineStats:
        """Run the pipeline until the source ends or a stop is requested."""
        if self._asr is None:
            raise RuntimeError("Daemon.start() must run before serve()")
        live = self.options.source.kind in ("device", "monitor")
        chunks: AsyncIterator[AudioChunk] = open_source(
            self.options.source,
            realtime=self.options.realtime,
            block_s=self.config.capture.block_s,
            on_status=self._on_status,
        )
        sinks: list[SegmentSink] = []
        if self.server is not None:
            sinks.append(self._publish)
        sinks += self._extra_sinks
        pipeline = Pipeline(self._asr, chunks, sinks, queue=QueuePolicy(live=live))
        return await pipeline.run(self._stop)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close(drain_timeout_s=self.options.drain_timeout_s)

    def _publish(self, update: SegmentUpdate) -> None:
        if self.server is not None:
            self.server.publish_segment(update)

    def _on_status(self, status: StatusUpdate) -> None:
        level = logging.WARNING if status.capture == "lost" else logging.INFO
        detail = f": {status.detail}" if status.detail else ""
        log.log(level, "capture %s%s", status.capture, detail)
        if self.server is not None:
            self.server.publish_status(status)
        for sink in self._status_sinks:
            sink(status)
