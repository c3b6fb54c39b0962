"""`python -m export plan|onnx|verify`: the command line of export/.

  plan    --config CONFIG.json --precision fp32|fp16|int8|int4   sizes, KV cache, memory
  onnx    --config CONFIG.json --random-weights --out DIR        random-weight fp32 export
  verify  DIR                                                    ONNX Runtime vs transformers
  train   --out DIR [--minutes M]                                the bundled translation model

Errors from the tree in `export.errors` become one line on stderr and the error's exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.errors import ConfigKeyError, ExportError
from export.families import spec_from_config
from export.plan import PRECISIONS, format_plan, make_plan
from subtitled.errors import SubtitledError


def load_config(path: Path) -> dict[str, Any]:
    """Read a Hugging Face config.json; errors name the file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportError(f"cannot read config {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigKeyError(f"config {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigKeyError(f"config {path} must hold a JSON object")
    return config


def _plan(args: argparse.Namespace) -> int:
    spec = spec_from_config(load_config(args.config))
    print(format_plan(make_plan(spec, PRECISIONS[args.precision])))
    return 0


def _onnx(args: argparse.Namespace) -> int:
    if not args.random_weights:
        raise ExportError(
            "export from a checkpoint directory is not built yet; "
            "use --config CONFIG.json --random-weights"
        )
    from export.reference import export_random  # torch and transformers: only here

    manifest = export_random(load_config(args.config), args.out, args.precision, args.seed)
    print(
        f"wrote {args.out}: {manifest.name}, {len(manifest.files)} files, "
        f"{len(manifest.kv_layout)} layers of KV cache"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from export.reference import verify  # torch, transformers and onnxruntime: only here

    report = verify(args.directory, args.prompt_tokens, args.decode_steps, args.seed)
    print(
        f"prompt {report.prompt_tokens} tokens (prefilled in two chunks), "
        f"{report.decode_steps} greedy steps"
    )
    print(f"max |logit difference| {report.max_abs_logit_diff:.3g} (limit 1e-3)")
    print(f"greedy tokens identical: {'yes' if report.tokens_identical else 'no'}")
    print("verify: " + ("passed" if report.passed else "FAILED"))
    return 0 if report.passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser(
        "plan", help="bytes per part, KV cache and memory needed, from a config alone"
    )
    plan.add_argument("--config", type=Path, required=True, help="Hugging Face config.json")
    plan.add_argument("--precision", choices=sorted(PRECISIONS), default="int4")
    plan.set_defaults(run=_plan)
    onnx = commands.add_parser("onnx", help="export a model to an ONNX model directory")
    onnx.add_argument("--config", type=Path, required=True, help="Hugging Face config.json")
    onnx.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights instead of a checkpoint",
    )
    onnx.add_argument("--out", type=Path, required=True, help="model directory to write")
    onnx.add_argument("--precision", choices=["fp32"], default="fp32")
    onnx.add_argument("--seed", type=int, default=0)
    onnx.set_defaults(run=_onnx)
    check = commands.add_parser("verify", help="compare ONNX Runtime with transformers")
    check.add_argument("directory", type=Path, help="model directory written by `onnx`")
    check.add_argument("--prompt-tokens", type=int, default=24)
    check.add_argument("--decode-steps", type=int, default=64)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=_verify)
    from export import train_cli  # argument definitions only; torch loads when it runs

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
