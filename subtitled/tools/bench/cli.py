"""The `subtitled bench` subcommand: run a manifest, write the report, print the table.

    subtitled bench MANIFEST --out report.json [--plot report.png] [--long-form]
        [--clock simulated|real] [--filter SUBSTRING ...] [--limit N] [--target de,es]
        [--refs FILE] [--no-offline] [-c CONFIG] [--set KEY=VALUE ...]

`subtitled.cli` registers it with `add_parser(commands)`; the handler is `run_bench`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from subtitled.config import Config, load_config, plan_languages, with_overrides
from subtitled.errors import ConfigError

if TYPE_CHECKING:  # the driver pulls in the ASR stack: only when the command runs
    from subtitled.tools.bench.driver import Progress


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `bench` on the top-level subcommands (handler: `run_bench`)."""
    bench = commands.add_parser(
        "bench",
        help="evaluation report: WER, latency, flicker, cost (JSON + PNG)",
        description="Run every manifest item through the streaming pipeline and report "
        "accuracy (WER against the transcripts and against whole-clip decoding), latency, "
        "flicker and cost.",
    )
    bench.add_argument("manifest", type=Path, metavar="MANIFEST",
                       help="TSV: path, duration_s, transcript[, ref_LANG ...]; paths "
                       "relative to the manifest's folder")
    bench.add_argument("--out", type=Path, required=True, help="write the JSON report here")
    bench.add_argument("--plot", type=Path, help="also write a PNG of latency here")
    bench.add_argument("--long-form", action="store_true",
                       help="concatenate the items, in order, with 0.3 s gaps, into one stream")
    bench.add_argument("--clock", choices=("simulated", "real"), default="simulated",
                       help="simulated: audio at its own timestamps with compute time charged "
                       "to the clock (default, fast); real: played at 1x")
    bench.add_argument("--filter", metavar="SUBSTRING", action="append", default=[],
                       help="only items whose manifest path contains SUBSTRING "
                       "(repeatable: any of them)")
    bench.add_argument("--limit", type=int, metavar="N", help="only the first N items")
    bench.add_argument("--target", metavar="LANGS",
                       help="target languages, comma-separated (e.g. de,es)")
    bench.add_argument("--translation-model",
                       help="'bundled', a model name in models/, or a model directory")
    bench.add_argument("--refs", type=Path, metavar="FILE",
                       help="TSV of reference translations: path, ref_LANG ...")
    bench.add_argument("--no-offline", action="store_true",
                       help="skip the whole-clip baseline (offline_wer is null)")
    bench.add_argument("-c", "--config", type=Path,
                       help="config file (default: $XDG_CONFIG_HOME/subtitled/config.toml)")
    bench.add_argument("--asr-model", help="'tiny.en' (bundled) or a CTranslate2 model dir")
    bench.add_argument("--threads", type=int, help="CPU threads for the ASR model")
    bench.add_argument("--profile", choices=("performance", "battery"), default="performance",
                       help="the power profile to run: battery steps the ASR every "
                            "power.battery_step_s and translates final segments only")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config key, e.g. --set streaming.step_s=0.4 (repeatable)")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark described by `args`; 0 on success (errors are raised)."""
    from subtitled.asr.whisper import WhisperTranscriber
    from subtitled.capture import decode_file
    from subtitled.tools.bench.driver import offline_words, peak_rss_mb, plan_streams, run_streams
    from subtitled.tools.bench.manifest import add_references, read_manifest, select
    from subtitled.tools.bench.report import RunInfo, analyse, format_table, to_json

    config = load_bench_config(args)
    # English wanted from other speech is Whisper's translate task, as in the daemon: the
    # ASR's own words are the 'en' track, the other targets are translated from them.
    plan = plan_languages(config)
    targets = config.translation.targets
    config = dataclasses.replace(config, asr=plan.asr, translation=plan.translation)
    items = read_manifest(args.manifest)
    if args.refs is not None:
        items = add_references(items, args.refs)
    items = select(items, contains=args.filter, limit=args.limit)
    out = _writable(args.out)
    plot = _writable(args.plot) if args.plot is not None else None

    err = sys.stderr
    total_s = sum(i.duration_s for i in items)
    print(f"bench: {len(items)} items, {total_s:.0f} s of audio; decoding", file=err, flush=True)
    plans = plan_streams(items, (decode_file(i.path) for i in items), long_form=args.long_form)
    transcriber = WhisperTranscriber(config.asr)
    progress = ProgressLine(err, total_s=sum(p.duration_s for p in plans),
                            durations_s=[p.duration_s for p in plans])
    runs = run_streams(plans, transcriber, config, args.clock, progress)
    progress.done()
    translation_model = None
    translation_cpu_s = 0.0
    if config.translation.targets:
        runs, translation_model, translation_cpu_s = _translate_runs(
            runs, config, err, finals_only=args.profile == "battery"
        )
    if plan.whisper_targets:
        runs = [_with_whisper_tracks(run, plan.whisper_targets) for run in runs]
        translation_model = translation_model or f"{transcriber.name} (translate task)"
    rss_mb = peak_rss_mb()
    offline = None
    if not args.no_offline:
        print("bench: whole-clip baseline (beam 5)", file=err, flush=True)
        offline = offline_words(plans, config.asr)
    info = RunInfo(
        manifest=str(args.manifest),
        clock=args.clock,
        long_form=args.long_form,
        asr_model=transcriber.name,
        step_s=config.streaming.step_s,
        beam_size=config.asr.beam_size,
        threads=config.asr.threads,
        targets=targets,
        translation_model=translation_model,
        cpu_s=sum(run.cpu_s for run in runs),
        peak_rss_mb=rss_mb,
        profile=args.profile,
        translation_cpu_s=translation_cpu_s,
    )
    result = analyse(items, runs, offline, info)
    if plan.asr.task == "translate":
        result = dataclasses.replace(result, notes=(
            *result.notes,
            "Whisper translated (asr.task translate): WER compares its English with the "
            "transcript; BLEU and chrF of 'en' are the measure",
        ))
    _write(out, json.dumps(to_json(result), indent=2, ensure_ascii=False) + "\n")
    if plot is not None:
        from subtitled.tools.bench.plot import write_plot

        write_plot(result, plot)
    print(format_table(result))
    print(f"\nreport: {out}" + (f"\nplot:   {plot}" if plot is not None else ""))
    return 0


def _with_whisper_tracks(run: Any, targets: tuple[str, ...]) -> Any:
    """`run` with each revision carrying the tracks Whisper itself produced (the daemon's
    `whisper_tracks`), so BLEU, chrF and latency are reported for them as for any target."""
    from subtitled.daemon import whisper_tracks
    from subtitled.tools.bench.metrics import Emission

    emissions = tuple(
        Emission(e.time_s, whisper_tracks(e.update, targets)) for e in run.emissions
    )
    return dataclasses.replace(run, emissions=emissions)


def _translate_runs(
    runs: list[Any], config: Config, err: Any, finals_only: bool
) -> tuple[list[Any], str | None, float]:
    """Each stream's ASR revisions through the translate stage on the benchmark clock
    (after the ASR run: the two stages' competition for the CPU is not modelled); the
    runs, the model's name and the translator's CPU seconds."""
    from subtitled.errors import ModelError
    from subtitled.tools.bench.translate_sim import simulate
    from subtitled.translate.models import load_translator

    try:
        translator = load_translator(config.translation)
    except ModelError as exc:
        print(f"bench: translation is off: {exc}", file=err, flush=True)
        return runs, None, 0.0
    print(f"bench: translating into {', '.join(translator.languages)} with {translator.name}",
          file=err, flush=True)
    translated = []
    cpu_s = 0.0
    for run in runs:
        translator.reset()
        sim = simulate(run.emissions, translator, config.translation.policy.include_partial,
                       finals_only=finals_only)
        translated.append(dataclasses.replace(run, emissions=sim.emissions))
        cpu_s += sum(cost.cpu_s for cost in sim.costs)
    return translated, translator.name, cpu_s


def load_bench_config(args: argparse.Namespace) -> Config:
    """The config file, then --asr-model / --threads / --target / --set on top; with
    `--profile battery` the battery profile's ASR step and translation threads."""
    config = load_config(args.config, explicit=args.config is not None)
    flags: dict[str, Any] = {
        "asr.model": args.asr_model,
        "asr.threads": args.threads,
        "translation.targets": args.target,
        "translation.model": args.translation_model,
    }
    config = with_overrides(config, flags, args.set)
    if getattr(args, "profile", "performance") == "battery":
        streaming = dataclasses.replace(config.streaming, step_s=config.power.battery_step_s)
        translation = dataclasses.replace(
            config.translation, threads=config.power.battery_threads(config.translation.threads)
        )
        config = dataclasses.replace(config, streaming=streaming, translation=translation)
    return config


def _writable(path: Path) -> Path:
    """Check early (before minutes of work) that `path` can be written."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder for {path}: {exc}") from exc
    return path


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


class ProgressLine:
    """Audio done, the stream's clock and its real-time factor on stderr while streams run.

    On a terminal one line is rewritten in place; otherwise (a log file) a line is
    printed at most every `every_s` seconds of wall time, and at the very end.
    """

    def __init__(
        self, stream: TextIO, total_s: float, durations_s: list[float], every_s: float = 30.0
    ) -> None:
        self.stream = stream
        self.total_s = total_s
        self.before_s = [sum(durations_s[:i]) for i in range(len(durations_s))]
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_print = 0.0
        self._printed = False

    def __call__(self, p: Progress) -> None:
        done_s = self.before_s[p.stream] + p.audio_s
        last = p.stream + 1 == p.streams and p.audio_s >= p.stream_audio_s - 1e-6
        now = time.monotonic()
        if not self.tty and not last and now - self._last_print < self.every_s:
            return
        self._last_print = now
        rtf = p.compute_s / p.audio_s if p.audio_s > 0 else 0.0
        line = (
            f"stream {p.stream + 1}/{p.streams}: {done_s:7.1f} / {self.total_s:.1f} s audio "
            f"({done_s / max(self.total_s, 1e-9):4.0%}), clock {p.clock_s:7.1f} s, "
            f"RTF {rtf:.2f}"
        )
        if self.tty:
            print("\r" + line, end="", file=self.stream, flush=True)
            self._printed = True
        else:
            print(line, file=self.stream, flush=True)

    def done(self) -> None:
        if self._printed:
            print(file=self.stream, flush=True)
