"""`python -m export bench`: decode and prefill speed of a random MoE against PyTorch eager
and against two dense models, in one run, on the same threads.

Three seeded random models of one shape (Qwen3 attention, SwiGLU feed-forward):
- the MoE (`qwen3_moe`): E experts of intermediate size I, top-k, exported once per
  experts' kernel at quantised precisions: subtitled's native `SparseExperts`, ONNX
  Runtime's `QMoE`, and the sparse gather path;
- dense, same *active* parameters (`qwen3`): intermediate k * I;
- dense, same *total* parameters: intermediate E * I.
Each is exported to ONNX at the chosen precision and timed under ONNX Runtime, and timed in
PyTorch eager (fp32, transformers) with the same thread count: prefill tokens/s of one
prompt from an empty cache (best of 3), and decode ms/token (median and best of the
single-token steps after it). The runners take turns, so a burst of load on a shared CPU
slows them all alike instead of one of them; each turn decodes `--burst` tokens in a row,
as the daemon decodes a subtitle's tokens back to back, and the first step of a turn,
which follows the other runners' (their weights through the caches), is reported
apart as the cold figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.plan import PRECISIONS
from subtitled.translate.contract import MODEL_FILE
from subtitled.translate.kvcache import KvCache
from subtitled.translate.manifest import Manifest
from subtitled.translate.runtime import RuntimeConfig, open_session


@dataclass(frozen=True)
class BenchRow:
    """One model under one runtime."""

    model: str
    runtime: str
    total_params: int
    active_params: int
    prefill_tokens_per_s: float
    decode_ms_per_token: float
    decode_best_ms: float
    decode_cold_ms: float


@dataclass(frozen=True)
class BenchReport:
    rows: tuple[BenchRow, ...]
    precision: str
    threads: int
    spin: bool
    prefill_tokens: int
    decode_tokens: int
    burst: int
    load_average: float

    def row(self, model: str, runtime: str) -> BenchRow:
        return next(r for r in self.rows if r.model == model and r.runtime == runtime)


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The MoE and its two dense counterparts."""
    heads = max(1, args.hidden // 64)
    common: dict[str, Any] = {
        "vocab_size": 8000,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 4),
        "head_dim": args.hidden // heads,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    }
    size = args.expert_intermediate
    return {
        "moe": {
            **common,
            "model_type": "qwen3_moe",
            "num_experts": args.experts,
            "num_experts_per_tok": args.top_k,
            "moe_intermediate_size": size,
            "intermediate_size": size,
            "norm_topk_prob": True,
        },
        "dense, same active": {
            **common,
            "model_type": "qwen3",
            "intermediate_size": args.top_k * size,
        },
        "dense, same total": {
            **common,
            "model_type": "qwen3",
            "intermediate_size": args.experts * size,
        },
    }


class _OnnxRunner:
    """One exported model under ONNX Runtime through the daemon's cache (`KvCache`):
    prefill a prompt, then greedy steps."""

    def __init__(self, directory: Path, manifest: Manifest, threads: int, spin: bool) -> None:
        # As the daemon: idle pool threads sleep instead of spinning (on a shared CPU
        # spinning threads steal the cores the work needs), unless `--spin` (a dedicated
        # machine: no wake-up latency per parallel node).
        session = open_session(directory / MODEL_FILE, threads, spinning=spin)
        self._cache = KvCache(
            session, manifest.kv_layout, reserve_tokens=RuntimeConfig().reserve_tokens
        )

    def prefill(self, prompt: np.ndarray) -> int:
        self._cache.reset()
        return int(self._cache.forward(prompt[0].tolist())[-1].argmax())

    def step(self, token: int) -> int:
        return int(self._cache.forward([token])[-1].argmax())


class _TorchRunner:
    """The same model in PyTorch eager (transformers, fp32)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._cache: Any = None

    def prefill(self, prompt: np.ndarray) -> int:
        import torch

        with torch.no_grad():
            out = self._model(input_ids=torch.from_numpy(prompt), use_cache=True)
        self._cache = out.cache
        return int(out.logits[0, -1].argmax())

    def step(self, token: int) -> int:
        import torch

        with torch.no_grad():
            out = self._model(input_ids=torch.tensor([[token]]), cache=self._cache, use_cache=True)
        self._cache = out.cache
        return int(out.logits[0, -1].argmax())


def _measure(
    runners: list[_OnnxRunner | _TorchRunner], prompt: np.ndarray, steps: int, burst: int
) -> list[tuple[float, float, float, float]]:
    """Prefill tokens/s (best of 3), then decode ms/token: the median and best step and the
    median first step of a burst. The runners take turns, so bursts of load on a shared CPU
    hit them all alike; each turn decodes `burst` tokens in a row, as the daemon decodes a
    subtitle's tokens back to back. The first step of each turn follows the other runners'
    (up to hundreds of MB of weights through the caches), so its figure is the cold one."""
    for runner in runners:  # warm-up
        runner.step(runner.prefill(prompt[:, :8]))
    prefill: list[list[float]] = [[] for _ in runners]
    tokens = [0] * len(runners)
    for _ in range(3):
        for i, runner in enumerate(runners):
            began = time.perf_counter()
            tokens[i] = runner.prefill(prompt)
            prefill[i].append(time.perf_counter() - began)
    decode: list[list[float]] = [[] for _ in runners]
    cold: list[list[float]] = [[] for _ in runners]
    for turn in range(0, steps, burst):
        for i, runner in enumerate(runners):
            for step in range(turn, min(turn + burst, steps)):
                began = time.perf_counter()
                tokens[i] = runner.step(tokens[i])
                decode[i].append(time.perf_counter() - began)
                if step == turn:
                    cold[i].append(decode[i][-1])
    return [
        (
            prompt.shape[1] / min(p),
            1000 * float(np.median(d)),
            1000 * min(d),
            1000 * float(np.median(c)),
        )
        for p, d, c in zip(prefill, decode, cold, strict=True)
    ]


def run_bench(args: argparse.Namespace) -> BenchReport:
    """Export the three models, then time them all, interleaved, under ONNX Runtime and
    PyTorch eager."""
    import torch

    from export.families import spec_from_config
    from export.onnx_native import moe_kernel_precision
    from export.plan import make_plan
    from export.reference import export_random, random_model

    torch.set_num_threads(args.threads)
    precision = PRECISIONS[args.precision]
    prompt = np.random.default_rng(0).integers(0, 8000, size=(1, args.prefill_tokens))
    prompt = prompt.astype(np.int64)
    labels: list[tuple[str, str, int, int]] = []
    runners: list[_OnnxRunner | _TorchRunner] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        for name, config in configs(args).items():
            plan = make_plan(spec_from_config(config), PRECISIONS["fp32"])
            sizes = (plan.total_params, plan.active_params)
            variants = [(f"onnx {precision.name}", precision)]
            if name == "moe" and precision.weight_bits is not None:
                # the MoE under each experts' kernel (export.onnx_native.moe_kernel_precision)
                variants = [
                    (f"onnx {precision.name} {kernel}", moe_kernel_precision(precision, kernel))
                    for kernel in ("native", "qmoe", "sparse")
                ]
            for label, variant in variants:
                out = work / f"{name}_{label}".replace(",", "").replace(" ", "_")
                manifest = export_random(config, out, variant)
                labels.append((name, label, *sizes))
                runners.append(_OnnxRunner(out, manifest, args.threads, args.spin))
            labels.append((name, "torch eager fp32", *sizes))
            runners.append(_TorchRunner(random_model(config)))
        timed = _measure(runners, prompt, args.decode_tokens, max(1, args.burst))
    rows = tuple(BenchRow(*label, *t) for label, t in zip(labels, timed, strict=True))
    return BenchReport(
        rows,
        precision.name,
        args.threads,
        args.spin,
        args.prefill_tokens,
        args.decode_tokens,
        max(1, args.burst),
        os.getloadavg()[0],
    )


def format_bench(report: BenchReport) -> str:
    """The table and the three ratios the goals are stated in."""
    lines = [
        f"{report.threads} threads ({'spinning' if report.spin else 'sleeping'} when idle); "
        f"prefill {report.prefill_tokens} tokens from an empty "
        f"cache; decode {report.decode_tokens} single-token steps after it, {report.burst} "
        "in a row per turn (cold: the first of a turn, after the other runners'); load "
        f"average {report.load_average:.1f} at the end (figures from a shared machine are "
        "noisy)",
        f"{'model':<20} {'runtime':<18} {'total':>8} {'active':>8} "
        f"{'prefill tok/s':>14} {'decode ms/tok':>14} {'best':>7} {'cold':>7}",
    ]
    for r in report.rows:
        lines.append(
            f"{r.model:<20} {r.runtime:<18} {r.total_params / 1e6:>7.1f}M "
            f"{r.active_params / 1e6:>7.1f}M {r.prefill_tokens_per_s:>14.1f} "
            f"{r.decode_ms_per_token:>14.2f} {r.decode_best_ms:>7.2f} {r.decode_cold_ms:>7.2f}"
        )
    onnx, torch = f"onnx {report.precision}", "torch eager fp32"

    def ratios(pick: Callable[[BenchRow], float], kernel: str) -> tuple[float, float, float]:
        moe = pick(report.row("moe", kernel))
        return (
            pick(report.row("moe", torch)) / moe,
            moe / pick(report.row("dense, same active", onnx)),
            pick(report.row("dense, same total", onnx)) / moe,
        )

    for kernel in [r.runtime for r in report.rows if r.model == "moe" and r.runtime != torch]:
        median = ratios(lambda r: r.decode_ms_per_token, kernel)
        best = ratios(lambda r: r.decode_best_ms, kernel)
        cold = ratios(lambda r: r.decode_cold_ms, kernel)
        lines += [
            f"decode ratios of the MoE as `{kernel}`, from the medians (best steps; cold):",
            f"  ONNX vs PyTorch eager:          {median[0]:5.2f}x faster ({best[0]:.2f}x; "
            f"{cold[0]:.2f}x; goal >= 2)",
            f"  vs dense with same active:      {median[1]:5.2f}x the time ({best[1]:.2f}x; "
            f"{cold[1]:.2f}x; goal <= 1.3)",
            f"  vs dense with same total:       {median[2]:5.2f}x faster ({best[2]:.2f}x; "
            f"{cold[2]:.2f}x; goal >= 3)",
        ]
    return "\n".join(lines)
