"""`python -m export plan|onnx|verify|bench|train`: the command line of export/.

  plan    --config CONFIG.json --precision P                  sizes, KV cache, memory
  onnx    --model DIR --out DIR --precision P [--licence L]   export a checkpoint directory
          (--model FILE.gguf | ollama:NAME[:TAG] | lmstudio:PUB/REPO: a GGUF file)
          [--moe-kernel auto|native|qmoe|sparse]              the experts' kernel
          [--kv-cache shared|append]                          GQA cache: one buffer, or past+new
  onnx    --config CONFIG.json --random-weights --out DIR     a seeded random-weight model
  reexport SRC --out DIR [--precision P]                      an exported model, exported again
  verify  DIR [--reference CHECKPOINT]                        ONNX Runtime vs transformers
  amend   DIR [--prompt KEY=JSON ...]                         prompt keys; re-hash doc files
  bench   [--precision P]                                     MoE vs dense, ONNX vs PyTorch
  bench-full --config CONFIG.json [--precision int4]          a full-size model vs llama.cpp
  train   --out DIR [--minutes M]                             the bundled translation model

P is fp32, fp16, int8 or int4. Errors from the tree in `export.errors` become one line on
stderr and the error's exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.checkpoint import load_config
from export.errors import ExportError
from export.families import spec_from_config
from export.plan import PRECISIONS, format_plan, make_plan
from subtitled.errors import SubtitledError
from subtitled.translate.contract import MANIFEST_FILE, MODEL_FILE


def _plan(args: argparse.Namespace) -> int:
    spec = spec_from_config(load_config(args.config))
    precision = PRECISIONS[args.precision]
    precision = dataclasses.replace(precision, shared_cache=args.kv_cache == "shared")
    print(format_plan(make_plan(spec, precision)))
    return 0


class _ProgressLine:
    """Checkpoint tensors read so far, on one stderr line (a line per 10% when not a tty)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._shown = -1

    def __call__(self, key: str, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if self._tty:
            print(f"\r[{percent:3d}%] {done}/{total} {key[:60]:<60}", end="", file=sys.stderr)
            if done == total:
                print(file=sys.stderr)
        elif percent // 10 != self._shown or done == total:
            self._shown = percent // 10
            print(f"[{percent:3d}%] {done}/{total} tensors ({key})", file=sys.stderr)
        sys.stderr.flush()


KV_CACHE_OPTION: dict[str, Any] = {
    "choices": ("shared", "append"),
    "default": "shared",
    "help": "shared: GroupQueryAttention layers keep K/V in one past/present buffer that "
    "subtitled's runtime binds as both, so a step writes only its new tokens (held lengths "
    "in the input cache_lengths), and K=V layers (Gemma 4) cache K beside V; append: the "
    "present is the past plus the new tokens, as runners that feed each present back as "
    "the next past expect, and K=V layers cache V only (half the memory, K rebuilt each "
    "step)",
}


def _onnx(args: argparse.Namespace) -> int:
    precision = PRECISIONS[args.precision]
    from export.onnx_native import moe_kernel_precision  # onnx: only here

    precision = moe_kernel_precision(precision, args.moe_kernel)
    precision = dataclasses.replace(precision, shared_cache=args.kv_cache == "shared")
    if args.model is not None:
        if args.config is not None or args.random_weights:
            raise ExportError("--model takes the config from the checkpoint directory")
        from export.model_dir import export_checkpoint, export_gguf
        from subtitled.translate.gguf_stores import resolve_model

        model = resolve_model(args.model)
        # A file is a GGUF file (a *.gguf, or an Ollama blob); a directory a checkpoint.
        export = export_gguf if model.is_file() else export_checkpoint
        manifest = export(model, args.out, precision, args.licence, args.name, _ProgressLine())
    else:
        if args.config is None or not args.random_weights:
            raise ExportError("pass --model DIR, or --config CONFIG.json --random-weights")
        from export.reference import export_random  # torch and transformers: only here

        manifest = export_random(
            load_config(args.config), args.out, precision, args.seed, _ProgressLine()
        )
    size = sum(f.bytes for f in manifest.files if f.path.startswith(MODEL_FILE))
    print(
        f"wrote {args.out}: {manifest.name}, {manifest.precision}, model {size / 1e6:.1f} MB, "
        f"{len(manifest.files)} files, {len(manifest.kv_layout)} layers of KV cache"
    )
    return 0


def _reexport(args: argparse.Namespace) -> int:
    from export.onnx_native import moe_kernel_precision  # torch, transformers, onnx
    from export.reexport import reexport
    from subtitled.translate.manifest import load_manifest

    source = load_manifest(args.source)
    precision = PRECISIONS[args.precision or source.precision]
    precision = moe_kernel_precision(precision, args.moe_kernel)
    precision = dataclasses.replace(precision, shared_cache=args.kv_cache == "shared")
    manifest = reexport(args.source, args.out, precision, args.keep_checkpoint, _ProgressLine())
    print(f"wrote {args.out}: {manifest.name}, {manifest.precision} (from {args.source})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from export.verify import format_report, verify  # torch, transformers, onnxruntime

    report = verify(
        args.directory, args.reference, args.prompt_tokens, args.decode_steps, args.seed
    )
    print(format_report(report))
    return 0 if report.passed else 1


def _prompt_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string


def _amend(args: argparse.Namespace) -> int:
    from export.model_dir import amend_model_dir

    manifest = amend_model_dir(args.directory, dict(args.prompt))
    print(f"amended {args.directory / MANIFEST_FILE}")
    if manifest.prompt is not None:
        print(json.dumps(dataclasses.asdict(manifest.prompt), indent=2))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from export.bench import format_bench, run_bench  # torch, transformers, onnxruntime

    print(format_bench(run_bench(args)))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan", help="bytes per part, KV cache and memory needed, from a config alone"
    )
    plan.add_argument("--config", type=Path, required=True, help="Hugging Face config.json")
    plan.add_argument("--precision", choices=sorted(PRECISIONS), default="int4")
    plan.add_argument("--kv-cache", **KV_CACHE_OPTION)
    plan.set_defaults(run=_plan)
    onnx = commands.add_parser("onnx", help="export a model to an ONNX model directory")
    onnx.add_argument(
        "--model",
        help="Hugging Face checkpoint directory, a GGUF file, ollama:NAME[:TAG] (Ollama's "
        "local store) or lmstudio:PUBLISHER/REPO[/FILE.gguf] (LM Studio's models folder)",
    )
    onnx.add_argument("--config", type=Path, help="Hugging Face config.json (--random-weights)")
    onnx.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights instead of a checkpoint",
    )
    onnx.add_argument("--out", type=Path, required=True, help="model directory to write")
    onnx.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    onnx.add_argument(
        "--moe-kernel",
        choices=("auto", "native", "qmoe", "sparse"),
        default="auto",
        help="auto: subtitled's native kernel for int8/int4 experts when it was built at "
        "install (else as qmoe); native: always it (the model then needs it at run time); "
        "qmoe: ONNX Runtime's QMoE for SwiGLU experts with softmax routing, else the sparse "
        "gather path; sparse: always the gather path (see export/README.md)",
    )
    onnx.add_argument("--kv-cache", **KV_CACHE_OPTION)
    onnx.add_argument("--licence", help="licence text for the manifest (else subtitled.json)")
    onnx.add_argument("--name", help="model name for the manifest")
    onnx.add_argument("--seed", type=int, default=0)
    onnx.set_defaults(run=_onnx)
    again = commands.add_parser(
        "reexport",
        help="export an exported model directory again (weights restored from its graph): "
        "a newer graph or another precision for a model whose checkpoint is gone",
    )
    again.add_argument("source", type=Path, help="model directory written by `onnx`")
    again.add_argument("--out", type=Path, required=True, help="model directory to write")
    again.add_argument(
        "--precision", choices=sorted(PRECISIONS), help="default: the source's precision"
    )
    again.add_argument("--moe-kernel", choices=("auto", "native", "qmoe", "sparse"), default="auto")
    again.add_argument("--kv-cache", **KV_CACHE_OPTION)
    again.add_argument(
        "--keep-checkpoint",
        type=Path,
        help="keep the restored Hugging Face checkpoint here (for verify --reference)",
    )
    again.set_defaults(run=_reexport)
    check = commands.add_parser("verify", help="compare ONNX Runtime with transformers")
    check.add_argument("directory", type=Path, help="model directory written by `onnx`")
    check.add_argument(
        "--reference", type=Path, help="the Hugging Face checkpoint it was exported from"
    )
    check.add_argument("--prompt-tokens", type=int, default=24)
    check.add_argument("--decode-steps", type=int, default=64)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_verify)
    amend = commands.add_parser(
        "amend",
        help="change prompt keys of an exported model directory and re-record the sha256 of "
        "its documentation files (the model files must still match)",
    )
    amend.add_argument("directory", type=Path, help="model directory written by `onnx`")
    amend.add_argument(
        "--prompt",
        type=_prompt_value,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a prompt template key and its JSON value, e.g. sentence_words=12 (repeatable)",
    )
    amend.set_defaults(run=_amend)
    bench = commands.add_parser(
        "bench", help="decode and prefill speed: MoE vs dense, ONNX Runtime vs PyTorch eager"
    )
    bench.add_argument("--precision", choices=sorted(PRECISIONS), default="int8")
    bench.add_argument("--experts", type=int, default=16)
    bench.add_argument("--top-k", type=int, default=2)
    bench.add_argument("--hidden", type=int, default=512)
    bench.add_argument("--layers", type=int, default=8)
    bench.add_argument("--expert-intermediate", type=int, default=512)
    bench.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    bench.add_argument(
        "--spin",
        action="store_true",
        help="let ONNX Runtime's idle threads spin (a dedicated machine); default: they "
        "sleep, as in the daemon, whose cores are shared with speech recognition",
    )
    bench.add_argument("--decode-tokens", type=int, default=64)
    bench.add_argument(
        "--burst",
        type=int,
        default=8,
        help="decode steps a runner takes in a row per turn (default 8, a subtitle's tokens "
        "back to back as in the daemon); 1: every step after the other runners' (cold)",
    )
    bench.add_argument("--prefill-tokens", type=int, default=128)
    bench.add_argument("--work", type=Path, help="folder for the exported models (else a temp)")
    bench.set_defaults(run=_bench)
    from export import bench_full, train_cli  # torch and onnx load only when they run

    bench_full.add_parser(commands)
    train_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one export command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except SubtitledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return code
