"""The daemon's lifecycle, in uvicorn's order: start, wait for the stop event, drain, close.

`Daemon.start` checks the source, loads the models and binds the port; `Daemon.serve` runs the
pipeline until the source ends or a stop is requested; `Daemon.close` finalises
open segments (the pipeline drains the audio it has) and closes the server within
a timeout. Signal handlers only set flags: SIGINT/SIGTERM `request_stop` (a second
one forces exit), SIGHUP `request_reload`, which re-reads the configuration and
restarts the capture/ASR stages if they changed, while the server and its clients
stay up. Under systemd the daemon reports READY/STATUS and pings the watchdog.

Languages (`config.plan_languages`): English wanted from speech in another language is
Whisper's translate task, whose English words are also published as the 'en' track; the
other targets go to the translation model. The language the ASR identifies
(`asr.language = "auto"`) is in every segment, and a change of it is announced in a new
hello.

Translation (`translation.targets`) sits between the ASR and the sinks
(`translate.stage.TranslationStage`); the pure stages around it are declared in
`Daemon.graph` (`subtitled.graph`). Its model loads in the background while captions
already flow; when it is live, clients get a new hello naming it. A missing or corrupt
model is logged and the daemon goes on captions-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from subtitled.asr.stream import StreamingAsr
from subtitled.asr.whisper import Transcriber, WhisperConfig, WhisperTranscriber
from subtitled.capture import SourceSpec, check_source, open_source
from subtitled.config import Config, LanguagePlan, plan_languages
from subtitled.errors import InvalidState
from subtitled.events import AudioChunk, SegmentUpdate, StatusUpdate, Translation
from subtitled.graph import Graph, MapStage, chain
from subtitled.pipeline import Pipeline, PipelineStats, QueuePolicy, SegmentSink
from subtitled.power import PowerSource, Profile, choose_profile, read_power_source
from subtitled.publish import ServiceInfo, SubtitleServer
from subtitled.publish.journal import Journal, default_journal_path
from subtitled.service import Notifier
from subtitled.translate.stage import TranslationStage
from subtitled.translate.stream import Translator
from subtitled.workers import model_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """What one run of the daemon does, beyond the configuration."""

    source: SourceSpec
    realtime: bool = True
    serve: bool = True
    """Start the WebSocket server (off for `transcribe`)."""
    journal: bool = False
    """Keep the transcript journal (config `journal.*`): on for `run`."""
    drain_timeout_s: float = 5.0
    wait_for_translation: bool = False
    """Load the translation model before the audio starts, and fail if it cannot be
    loaded (files: every segment gets translated); otherwise it loads in the
    background and a failure leaves the daemon captions-only."""


@dataclass(frozen=True)
class ReloadPlan:
    """What a re-read configuration changes in a running daemon (`plan_reload`)."""

    asr: WhisperConfig
    """The Whisper settings the new configuration runs (`plan_languages`)."""
    new_asr_model: bool
    """Load Whisper again (its settings changed); else the loaded model serves on."""
    source_changed: bool
    translation_changed: bool
    """The translator is dropped and loaded again in the background."""
    server_changed: bool
    """Server settings take effect only at the next restart: the clients stay connected."""
    watch_power: bool
    """Poll the power source (`power.profile = "auto"`)."""


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What applying `new` over `old` takes; pure, so every case is a table row in a test.
    The stream (VAD, commit policy, buffer) always starts fresh, on the new settings."""
    before, after = plan_languages(old), plan_languages(new)
    return ReloadPlan(
        asr=after.asr,
        new_asr_model=after.asr != before.asr,
        source_changed=new.capture.source != old.capture.source,
        translation_changed=(
            new.translation != old.translation or after.translation != before.translation
        ),
        server_changed=new.server != old.server,
        watch_power=new.power.profile == "auto",
    )


def _stat(stats: object, attr: str) -> float:
    return float(getattr(stats, attr))


class Daemon:
    """One capture source, one ASR, the subtitle server, and any extra sinks."""

    def __init__(
        self,
        config: Config,
        options: RunOptions,
        sinks: Sequence[SegmentSink] = (),
        status_sinks: Sequence[Callable[[StatusUpdate], None]] = (),
        *,
        reload_config: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self._extra_sinks = list(sinks)
        self._status_sinks = list(status_sinks)
        self._reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.server: SubtitleServer | None = None
        self._stop = asyncio.Event()
        self._run_stop = asyncio.Event()
        self._reload_requested = False
        self._signals = 0
        self.force_exit = False
        """Set by a second stop request: the caller exits at once, without draining."""
        self._main_task: asyncio.Task[object] | None = None
        self._asr: StreamingAsr | None = None
        self._asr_name = ""
        self.translation: TranslationStage | None = None
        self._translator: Translator | None = None
        self._loading: asyncio.Task[None] | None = None
        self._translator_threads: int | None = None  # of the translator in use
        # Segment ids stay unique across reloads and restarts (see the journal).
        self._next_segment_id = 0
        self._detected_language: str | None = None
        self._pipeline: Pipeline | None = None
        self._done = PipelineStats()  # of the pipeline runs that have ended
        self.profile: Profile | None = None
        """The power profile in force (`subtitled.power`); None before start."""
        self.power_source: PowerSource = "unknown"
        self._power_watch: asyncio.Task[None] | None = None
        self.graph = Graph(
            # The map stages around translation (`subtitled.graph`), in order; a new one
            # is its pure core and one line here.
            before=(),
            after=(MapStage("whisper-tracks", self._whisper_tracks),),
            sinks=("publish", *(getattr(s, "__name__", "sink") for s in self._extra_sinks)),
        )

    @property
    def languages(self) -> LanguagePlan:
        return plan_languages(self.config)

    def service_info(self, asr_name: str) -> ServiceInfo:
        translator = self._translator
        return ServiceInfo(
            asr_model=asr_name,
            translation_model=None if translator is None else translator.name,
            source_language=self.config.asr.language,
            target_languages=self.languages.whisper_targets
            + (() if translator is None else translator.languages),
            detected_language=self._detected_language,
        )

    async def start(self) -> None:
        """Check the source, load the ASR model (in a thread: it takes a second), bind the server.

        The source comes first: a missing file or device fails before any model loads and
        before the port is bound or announced. The translation model (unless the run waits
        for it) loads afterwards, in the background, while captions already flow: loading
        it in parallel with the ASR model was measured to delay READY and the first caption
        on 2 cores (`subtitled bench-startup`).
        """
        await asyncio.to_thread(check_source, self.options.source)
        await self._start_stages()
        if not self.options.wait_for_translation:
            self._loading = asyncio.create_task(self._load_translation(), name="load-translation")
        self.apply_power()
        if self.config.power.profile == "auto":
            self._power_watch = asyncio.create_task(self._watch_power(), name="power")

    async def _start_stages(self) -> None:
        transcriber = await model_thread("asr").call(WhisperTranscriber, self.languages.asr)
        self._asr = await model_thread("asr").call(StreamingAsr, transcriber, self.config.streaming)
        self._asr_name = transcriber.name
        published = chain(self.graph.after, [self._publish, *self._extra_sinks])
        self.translation = TranslationStage(
            [published], self._translator,
            include_partial=self.config.translation.policy.include_partial,
        )
        log.info("pipeline: %s", self.graph.describe())
        self.translation.start()
        if self.options.wait_for_translation:
            await self._load_translation(fail=True)
        if self.options.serve:
            journal = None
            if self.options.journal and self.config.journal.enabled:
                journal = Journal(
                    self.config.journal.path or default_journal_path(), str(self.options.source)
                )
            self.server = SubtitleServer(
                self.service_info(transcriber.name), self.config.server, journal
            )
            await self.server.start()
            if journal is not None:
                # Segment ids go on after the journaled ones, as seq numbers do.
                restored = journal.restored
                self._next_segment_id = restored.next_segment_id
                log.info("transcript journal %s: %d segments restored",
                         journal.path, len(restored.finals))
            self._register_metrics(self.server)

    def apply_power(self, force: bool = False) -> None:
        """Read the power source and put the profile it calls for in force: the ASR's
        step and translation of finals only, on the running pipeline, no restart."""
        power = self.config.power
        source = read_power_source(power.supply_path)
        profile = choose_profile(power.profile, source)
        if not force and (profile, source) == (self.profile, self.power_source):
            return
        changed = profile != self.profile
        self.profile, self.power_source = profile, source
        battery = profile == "battery"
        step_s = power.battery_step_s if battery else self.config.streaming.step_s
        asr = self._pipeline.asr if self._pipeline is not None else self._asr
        if asr is not None:
            asr.set_step(step_s)
        if self.translation is not None:
            self.translation.finals_only = battery
        if self.server is not None:
            self.server.set_power(profile, source, self._translator_threads)
        if changed:
            how = (f"ASR step {step_s:g} s, translation of final segments only" if battery
                   else f"ASR step {step_s:g} s, translation of every revision")
            log.info("power: %s, %s profile (%s)", source, profile, how)
        threads = self._translation_threads()
        if self._translator is not None and self._translator_threads != threads:
            # ONNX Runtime fixes a session's threads: load the model again with the
            # profile's count, in the background; the one in use serves until then.
            log.info("power: reloading the translation model on %d thread(s)", threads)
            if self._loading is not None:
                self._loading.cancel()
            self._loading = asyncio.create_task(self._load_translation(), name="load-translation")

    def _translation_threads(self) -> int:
        """The translation model's threads in the profile in force."""
        configured = self.config.translation.threads
        if self.profile != "battery":
            return configured
        return self.config.power.battery_threads(configured)

    async def _watch_power(self) -> None:
        while True:
            await asyncio.sleep(self.config.power.poll_s)
            self.apply_power()

    def asr_stats(self, attr: str) -> float:
        """A `PipelineStats` counter over the daemon's life: the runs before a reload and
        the current one."""
        current = 0.0 if self._pipeline is None else _stat(self._pipeline.stats, attr)
        return _stat(self._done, attr) + current

    def _register_metrics(self, server: SubtitleServer) -> None:
        from prometheus_client import Gauge

        for attr, name, doc in [
            ("audio_s", "audio_seconds", "Seconds of audio the ASR has taken in"),
            ("asr_compute_s", "compute_seconds", "Seconds spent in the ASR model"),
            ("dropped_chunks", "dropped_chunks",
             "Audio blocks dropped because the ASR fell behind real time"),
            ("asr_failures", "failures", "ASR worker failures (each followed by a restart)"),
        ]:
            gauge = Gauge(f"subtitled_asr_{name}", doc, registry=server.registry)
            gauge.set_function(functools.partial(self.asr_stats, attr))
        assert self.translation is not None
        stats = self.translation.stats
        for attr, doc in [
            ("updates", "Translator calls"),
            ("superseded", "Queued ASR revisions superseded before translation"),
            ("failures", "Translation worker failures (each followed by a restart)"),
            ("compute_s", "Seconds spent translating"),
        ]:
            gauge = Gauge(f"subtitled_translation_{attr}", doc, registry=server.registry)
            gauge.set_function(functools.partial(_stat, stats, attr))

    async def _load_translation(self, fail: bool = False) -> None:
        """Load the configured translator in a thread; make it live, or stay captions-only."""
        from subtitled.translate.models import load_translator

        config = dataclasses.replace(
            self.languages.translation, threads=self._translation_threads()
        )
        if not config.targets and self.languages.whisper_targets:
            log.info("English from Whisper's translate task; no translation model needed")
            return
        if not config.targets:
            from subtitled.translate.models import installed_models

            found = [p.name for p in installed_models()]
            hint = (f"; installed translation models: {', '.join(found)}" if found
                    else "; no translation model is installed")
            log.info("no target language (translation.targets, --target): captions only%s",
                     hint)
            return
        try:
            translator = await model_thread("translation").call(load_translator, config)
        except Exception as exc:
            if fail:
                raise
            log.error("translation is off, captions continue: %s", exc)
            return
        self._translator = translator
        self._translator_threads = config.threads
        if self.translation is not None:
            self.translation.set_translator(translator)
        if self.server is not None and self.profile is not None:
            self.server.set_power(self.profile, str(self.power_source), config.threads)
        log.info("translating into %s with %s", ", ".join(translator.languages),
                 translator.name)
        if self.server is not None:
            self.server.update_info(self.service_info(self._asr_name))

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested (a signal), rather than the source ending."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Signal handler body: the first call stops gracefully; the second sets
        `force_exit` and cancels the task that installed the handlers, whose caller then
        exits without draining (`subtitled.cli`)."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop request: exiting without draining")
            self.force_exit = True
            if self._main_task is not None:
                self._main_task.cancel()
            return
        log.info("stopping: finishing the audio already captured")
        self.notifier.stopping()
        self._stop.set()
        self._run_stop.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the configuration at the next safe point."""
        if self._reload_config is None:
            log.warning("reload requested, but this command has no configuration to reload")
            return
        self._reload_requested = True
        self._run_stop.set()

    def install_signal_handlers(self) -> None:
        """Route SIGINT/SIGTERM and SIGHUP here; a forced exit cancels the calling task."""
        loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    async def serve(self) -> PipelineStats:
        """Run the pipeline until the source ends or a stop is requested."""
        if self._asr is None:
            raise InvalidState("Daemon.start() must run before serve()")
        where = f" on {self.server.url}" if self.server is not None else ""
        self.notifier.ready(f"captioning {self.options.source}{where}")
        watchdog = asyncio.create_task(self.notifier.watchdog(), name="watchdog")
        try:
            while True:
                await self._run_pipeline(self._asr)
                if not self._reload_requested or self._stop.is_set():
                    return self._done
                await self._reload()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _run_pipeline(self, asr: StreamingAsr) -> None:
        self._run_stop = asyncio.Event()
        if self._stop.is_set() or self._reload_requested:
            self._run_stop.set()  # requested before this run began (during start-up)
        live = self.options.source.kind in ("device", "monitor")
        chunks: AsyncIterator[AudioChunk] = open_source(
            self.options.source,
            realtime=self.options.realtime,
            block_s=self.config.capture.block_s,
            on_status=self._on_status,
        )
        assert self.translation is not None
        sinks = [chain(self.graph.before, [self.translation.submit])]
        pipeline = Pipeline(
            asr, chunks, sinks, queue=QueuePolicy(live=live),
            first_segment_id=self._next_segment_id,
        )
        self._pipeline = pipeline
        try:
            await pipeline.run(self._run_stop)
        finally:
            # Into the life totals in the same step as the run is dropped: /metrics never
            # reads a total without it.
            for field in dataclasses.fields(PipelineStats):
                name = field.name
                setattr(self._done, name, getattr(self._done, name) + getattr(pipeline.stats, name))
            self._pipeline = None
            self._next_segment_id = pipeline.next_segment_id
            # Finals wait for their translation: publish them before the run ends.
            await self.translation.flush(self.options.drain_timeout_s * 2)

    async def _reload(self) -> None:
        """Apply a re-read configuration; keep the server (and its clients) up."""
        assert self._reload_config is not None
        self._reload_requested = False
        self.notifier.reloading()
        try:
            new = self._reload_config()
        except Exception as exc:  # a bad file must not take the daemon down
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready("reload failed; running with the previous configuration")
            return
        plan = plan_reload(self.config, new)
        if plan.server_changed:
            log.warning("server settings changed: they take effect at the next restart")
        transcriber: Transcriber
        if plan.new_asr_model:
            transcriber = await model_thread("asr").call(WhisperTranscriber, plan.asr)
            self._asr_name = transcriber.name
            if self.server is not None:
                self.server.update_info(self.service_info(transcriber.name))
        else:
            assert self._asr is not None
            transcriber = self._asr.transcriber
        # A fresh stream either way: the new streaming settings, no state of the old run.
        self._asr = await model_thread("asr").call(StreamingAsr, transcriber, new.streaming)
        if plan.source_changed:
            from subtitled.capture import parse_source

            source = parse_source(new.capture.source)
            self.options = dataclasses.replace(self.options, source=source)
        self.config = dataclasses.replace(new, server=self.config.server)
        if plan.translation_changed:
            self._translator = None
            if self.translation is not None:
                self.translation.set_translator(None)
                self.translation.include_partial = new.translation.policy.include_partial
            if self.server is not None:
                self.server.update_info(self.service_info(self._asr_name))
            self._loading = asyncio.create_task(self._load_translation(), name="load-translation")
        if self._power_watch is not None:
            self._power_watch.cancel()
            self._power_watch = None
        if plan.watch_power:
            self._power_watch = asyncio.create_task(self._watch_power(), name="power")
        self.apply_power(force=True)  # on the new ASR, with the new settings
        log.info("configuration reloaded")
        self.notifier.ready(f"captioning {self.options.source} (reloaded)")

    async def close(self) -> None:
        if self._power_watch is not None:
            self._power_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._power_watch
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading
        if self.translation is not None:
            await self.translation.close(self.options.drain_timeout_s)
            stats = self.translation.stats
            if stats.updates or stats.failures:
                log.info("translation: %d updates, %.1f s compute, %d failures",
                         stats.updates, stats.compute_s, stats.failures)
        if self.server is not None:
            await self.server.close(drain_timeout_s=self.options.drain_timeout_s)
            if self.server.journal is not None:
                self.server.journal.close()

    def _whisper_tracks(self, update: SegmentUpdate) -> SegmentUpdate:
        """`update` with the tracks Whisper produced (see `whisper_tracks`)."""
        return whisper_tracks(update, self.languages.whisper_targets)

    def _publish(self, update: SegmentUpdate) -> None:
        spoken = update.spoken_language or update.language
        if self.config.asr.language == "auto" and spoken != self._detected_language:
            self._detected_language = spoken
            if self.server is not None:
                self.server.update_info(self.service_info(self._asr_name))
        if self.server is not None:
            self.server.publish_segment(update)

    def _on_status(self, status: StatusUpdate) -> None:
        level = logging.WARNING if status.capture == "lost" else logging.INFO
        detail = f": {status.detail}" if status.detail else ""
        log.log(level, "capture %s%s", status.capture, detail)
        self.notifier.status(f"capture {status.capture}{detail}")
        if self.server is not None:
            self.server.publish_status(status)
        for sink in self._status_sinks:
            sink(status)


def whisper_tracks(update: SegmentUpdate, targets: tuple[str, ...]) -> SegmentUpdate:
    """`update` with a translation per target Whisper produced: its own words, the
    committed ones `stable` (they never change within a segment), the rest `unstable`."""
    if not targets or update.language not in targets:
        return update
    track = Translation(
        stable=update.committed_text, unstable="".join(w.text for w in update.partial).strip()
    )
    return dataclasses.replace(
        update, translations={**update.translations, **{lang: track for lang in targets}}
    )
