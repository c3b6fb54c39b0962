"""`subtitled bench-translate`: streaming translation with incremental KV-cache reuse,
side by side with a baseline that re-prefills the whole prompt on every update (what
SimulStreaming does), on a long transcript fed word by word at its real timing.

    subtitled bench-translate [--manifest TSV] [--target de] [--translation-model DIR]
                              [--minutes M] [--out report.json]

The transcript is the manifest's rows (by default the LJ Speech ones, in order, as one
long-form stream); each row's words are spread over its duration and committed one by
one (see `translate_sim.timed_word_emissions`). Both variants run on the simulated clock
of `translate_sim.simulate`, one after the other, on the same loaded model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from subtitled.config import Config, load_config, with_overrides
from subtitled.errors import ConfigError
from subtitled.tools.bench import metrics
from subtitled.tools.bench.translate_sim import (
    Simulation,
    UpdateCost,
    simulate,
    timed_word_emissions,
    word_shown_latencies,
)

DEFAULT_MANIFEST = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / \
    "speech" / "manifest.tsv"
WINDOW_S = 60.0
"""'First minute' and 'last minute' of the stream for the latency drift comparison."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `bench-translate` on the top-level subcommands."""
    bench = commands.add_parser(
        "bench-translate",
        help="streaming translation: KV-cache reuse against re-prefilling every update",
    )
    bench.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                       help="speech manifest TSV (transcripts and durations)")
    bench.add_argument("--filter", default="ljspeech",
                       help="only rows whose path contains this (default: ljspeech)")
    bench.add_argument("--minutes", type=float, help="only the first M minutes of the stream")
    bench.add_argument("--target", metavar="LANG", help="target language (default: de)")
    bench.add_argument("--translation-model", help="'bundled', a name, or a model directory")
    bench.add_argument("--threads", type=int, help="ONNX Runtime threads (translation.threads)")
    bench.add_argument("--ignore-stop", action="store_true",
                       help="decode to the length limit (a random-weight model says its stop "
                            "token at random; this makes its translations sentence-length)")
    bench.add_argument("--every-update", action="store_true",
                       help="translate every word commit, however far behind (same updates "
                            "for both variants); default: the daemon's policy, where a busy "
                            "translator skips superseded revisions")
    bench.add_argument("--no-baseline", action="store_true", help="skip the re-prefill baseline")
    bench.add_argument("--llama-cpp", type=Path, metavar="FILE.gguf",
                       help="also run llama.cpp (llama-cpp-python) on this GGUF as the decoder, "
                            "reusing its own prompt cache; the translation model must be "
                            "`python -m export onnx --model FILE.gguf` of the same file")
    bench.add_argument("--out", type=Path, help="write the JSON report here")
    bench.add_argument("-c", "--config", type=Path)
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.set_defaults(handler=run_bench_translate)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config, explicit=args.config is not None)
    config = with_overrides(config, {
        "translation.targets": args.target or ",".join(config.translation.targets) or "de",
        "translation.model": args.translation_model,
        "translation.threads": args.threads,
    }, args.set)
    if len(config.translation.targets) != 1:
        raise ConfigError("bench-translate measures one target language; give --target LANG")
    return config


def _percentiles(values_s: list[float]) -> dict[str, float] | None:
    found = metrics.percentiles_ms(values_s)
    return None if found is None else {"p50": round(found.p50_ms, 1), "p90": round(found.p90_ms, 1)}


def _ratio(a: dict[str, float] | None, b: dict[str, float] | None) -> float | None:
    return round(a["p50"] / b["p50"], 3) if a and b and b["p50"] else None


def summarise(sim: Simulation, language: str, duration_s: float) -> dict[str, Any]:
    """The figures of one variant."""
    costs: tuple[UpdateCost, ...] = sim.costs
    in_first = [c for c in costs if c.arrival_s < WINDOW_S]
    in_last = [c for c in costs if c.arrival_s >= duration_s - WINDOW_S]
    first_p = _percentiles([c.compute_s for c in in_first])
    last_p = _percentiles([c.compute_s for c in in_last])
    first_cpu = _percentiles([c.cpu_s for c in in_first])
    last_cpu = _percentiles([c.cpu_s for c in in_last])
    shown = word_shown_latencies(sim.emissions, costs, language)
    return {
        "updates": len(costs),
        "prefilled_tokens": sum(c.prefilled for c in costs),
        "decode_steps": sum(c.decode_steps for c in costs),
        "compute_s": round(sum(c.compute_s for c in costs), 3),
        "cpu_s": round(sum(c.cpu_s for c in costs), 3),
        "compute_per_update_ms": round(1000 * sum(c.compute_s for c in costs)
                                       / max(len(costs), 1), 1),
        "update_latency_ms": _percentiles([c.compute_s for c in costs]),
        "update_latency_first_minute_ms": first_p,
        "update_latency_last_minute_ms": last_p,
        "last_over_first_p50": _ratio(last_p, first_p),
        "update_cpu_first_minute_ms": first_cpu,
        "update_cpu_last_minute_ms": last_cpu,
        "last_over_first_p50_cpu": _ratio(last_cpu, first_cpu),
        "word_shown_latency_ms": _percentiles(shown),
        "queue_delay_ms": _percentiles([c.done_s - c.arrival_s for c in costs]),
    }


def run_bench_translate(args: argparse.Namespace) -> int:
    from subtitled.tools.bench.manifest import read_manifest, select
    from subtitled.translate.models import load_translator
    from subtitled.translate.stream import OnnxTranslator

    config = _config(args)
    language = config.translation.targets[0]
    items = select(read_manifest(args.manifest), contains=[args.filter] if args.filter else [],
                   limit=None)
    clips: list[tuple[str, float]] = []
    total_s = 0.0
    for item in items:
        if args.minutes is not None and total_s + item.duration_s > args.minutes * 60:
            break
        clips.append((item.transcript, item.duration_s))
        total_s += item.duration_s + 0.3
    if not clips:
        raise ConfigError(f"{args.manifest}: no rows match {args.filter!r}")
    emissions = timed_word_emissions(clips)
    duration_s = emissions[-1].time_s
    err = sys.stderr
    print(f"bench-translate: {len(clips)} clips, {duration_s / 60:.1f} min, "
          f"{len(emissions)} word commits, target {language}", file=err, flush=True)

    report: dict[str, Any] = {"manifest": str(args.manifest), "clips": len(clips),
                              "stream_s": round(duration_s, 1), "words": len(emissions),
                              "target": language, "every_update": args.every_update}
    variants = [("incremental", True)] + ([] if args.no_baseline else [("baseline", False)])
    if args.llama_cpp is not None:
        variants.append(("llama.cpp", True))
    for name, reuse in variants:
        translator = load_translator(config.translation, reuse=reuse)
        if args.ignore_stop and isinstance(translator, OnnxTranslator):
            translator.model.stop_ids = frozenset()
            report["ignore_stop"] = True
        if name == "llama.cpp":
            _use_llama_cpp(translator, args.llama_cpp, config.translation.threads)
        print(f"bench-translate: {name} ({translator.name})", file=err, flush=True)
        sim = simulate(emissions, translator, config.translation.policy.include_partial,
                       coalesce=not args.every_update)
        report[name] = summarise(sim, language, duration_s)
        if isinstance(translator, OnnxTranslator):
            stream = translator.streams[language]
            report[name]["evictions"] = stream.conversation.evictions
            report["model"] = translator.name
            report["threads"] = config.translation.threads
            report["context_tokens"] = config.translation.policy.context_tokens
        final = metrics.final_translation(sim.emissions, language) or ""
        report[name]["translation_sample"] = final[:200]
    if "llama.cpp" in report:
        inc, theirs = report["incremental"], report["llama.cpp"]
        report["ratios_to_llama_cpp"] = {
            "update_latency_p50": _ratio(inc["update_latency_ms"], theirs["update_latency_ms"]),
            "compute": round(inc["compute_s"] / max(theirs["compute_s"], 1e-9), 3),
        }
    if "baseline" in report:
        inc, base = report["incremental"], report["baseline"]
        report["ratios"] = {
            "prefilled_tokens": round(base["prefilled_tokens"] / max(inc["prefilled_tokens"], 1),
                                      2),
            "compute": round(base["compute_s"] / max(inc["compute_s"], 1e-9), 2),
            "compute_per_update": round(
                base["compute_per_update_ms"] / max(inc["compute_per_update_ms"], 1e-9), 2
            ),
        }
    report["goals"] = _goals(report)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


def _use_llama_cpp(translator: Any, gguf: Path, threads: int) -> None:
    """Put llama.cpp on `gguf` in place of each language stream's ONNX decoder."""
    from subtitled.tools.bench.llama_cpp import LlamaCppDecoder, LlamaCppModel
    from subtitled.translate.stream import OnnxTranslator

    if not isinstance(translator, OnnxTranslator):
        raise ConfigError("--llama-cpp needs the onnx translation backend (its tokenizer and "
                          "prompt)")
    for stream in translator.streams.values():
        model = LlamaCppModel(gguf, threads or 2, stream.context_budget,
                              translator.model.vocab_size)
        stream.decoder = LlamaCppDecoder(model, stream.config, translator.model.stop_ids)
    translator.name = f"llama.cpp on {gguf.name} (prompt cache)"


def _goals(report: dict[str, Any]) -> dict[str, bool | None]:
    inc = report["incremental"]
    ratios = report.get("ratios", {})
    shown = inc["word_shown_latency_ms"]
    drift = inc["last_over_first_p50"]
    return {
        "prefilled_tokens_10x_fewer": (ratios["prefilled_tokens"] >= 10 if ratios else None),
        "compute_5x_less": (ratios["compute"] >= 5 if ratios else None),
        "last_minute_latency_within_1.2x_first": None if drift is None else drift <= 1.2,
        "word_shown_p50_within_1s": None if shown is None else shown["p50"] <= 1000.0,
    }
