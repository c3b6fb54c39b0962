"""`python -m export bench`: decode and prefill speed of a random MoE against PyTorch eager
and against two dense models, in one run, on the same threads.

Three seeded random models of one shape (Qwen3 attention, SwiGLU feed-forward):
- the MoE (`qwen3_moe`): E experts of intermediate size I, top-k;
- dense, same *active* parameters (`qwen3`): intermediate k * I;
- dense, same *total* parameters: intermediate E * I.
Each is exported to ONNX at the chosen precision and timed under ONNX Runtime, and timed in
PyTorch eager (fp32, transformers) with the same thread count: prefill tokens/s of one
prompt from an empty cache (best of 3), and decode ms/token (the median of single-token
steps after it; medians and minima because the CPUs may be shared).
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

from export.model_dir import MODEL_FILE
from export.plan import PRECISIONS
from subtitled.translate.manifest import Manifest


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


@dataclass(frozen=True)
class BenchReport:
    rows: tuple[BenchRow, ...]
    precision: str
    threads: int
    prefill_tokens: int
    decode_tokens: int
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


def _time_onnx(
    directory: Path, manifest: Manifest, prompt: np.ndarray, steps: int, threads: int
) -> tuple[float, float, float]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: on a shared CPU (the daemon's ASR, other
    # processes) spinning threads steal the cores the work needs; measured 2-3x slower
    # decode under load with spinning on.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
    present = [o.name for o in manifest.outputs[1:]]

    def empty() -> dict[str, np.ndarray]:
        return {
            f"past_key_values.{kv.layer}.{t}": np.zeros(
                (1, kv.n_kv_heads, 0, kv.head_dim), np.float32
            )
            for kv in manifest.kv_layout
            for t in kv.tensors
        }

    def run(feeds: dict[str, np.ndarray], ids: np.ndarray, start: int) -> int:
        positions = np.arange(start, start + ids.shape[1], dtype=np.int64)[None, :]
        results = session.run(None, {**feeds, "input_ids": ids, "position_ids": positions})
        for name, value in zip(present, results[1:], strict=True):
            feeds[name.replace("present.", "past_key_values.")] = value
        return int(results[0][0, -1].argmax())

    run(empty(), prompt[:, :8], 0)  # warm-up
    prefill = []
    for _ in range(3):
        feeds = empty()
        began = time.perf_counter()
        token = run(feeds, prompt, 0)
        prefill.append(time.perf_counter() - began)
    for step in range(3):  # warm-up decode
        token = run(feeds, np.array([[token]], np.int64), prompt.shape[1] + step)
    feeds = empty()
    token = run(feeds, prompt, 0)
    decode = []
    for step in range(steps):
        began = time.perf_counter()
        token = run(feeds, np.array([[token]], np.int64), prompt.shape[1] + step)
        decode.append(time.perf_counter() - began)
    return prompt.shape[1] / min(prefill), 1000 * float(np.median(decode)), 1000 * min(decode)


def _time_torch(model: Any, prompt: np.ndarray, steps: int) -> tuple[float, float, float]:
    import torch

    ids = torch.from_numpy(prompt)
    with torch.no_grad():
        model(input_ids=ids[:, :8], use_cache=True)  # warm-up
        prefill = []
        for _ in range(3):
            began = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            prefill.append(time.perf_counter() - began)
        cache = out.cache
        token = out.logits[0, -1].argmax()
        for _ in range(3):  # warm-up decode
            out = model(input_ids=token.view(1, 1), cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[0, -1].argmax()
        out = model(input_ids=ids, use_cache=True)
        cache, token = out.cache, out.logits[0, -1].argmax()
        decode = []
        for _ in range(steps):
            began = time.perf_counter()
            out = model(input_ids=token.view(1, 1), cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[0, -1].argmax()
            decode.append(time.perf_counter() - began)
    return prompt.shape[1] / min(prefill), 1000 * float(np.median(decode)), 1000 * min(decode)


def run_bench(args: argparse.Namespace) -> BenchReport:
    """Export the three models and time each under ONNX Runtime and PyTorch eager."""
    import torch

    from export.families import spec_from_config
    from export.plan import make_plan
    from export.reference import export_random, random_model

    torch.set_num_threads(args.threads)
    precision = PRECISIONS[args.precision]
    prompt = np.random.default_rng(0).integers(0, 8000, size=(1, args.prefill_tokens))
    prompt = prompt.astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        for name, config in configs(args).items():
            plan = make_plan(spec_from_config(config), PRECISIONS["fp32"])
            out = work / name.replace(", ", "_").replace(" ", "_")
            manifest = export_random(config, out, precision)
            timed = _time_onnx(out, manifest, prompt, args.decode_tokens, args.threads)
            sizes = (plan.total_params, plan.active_params)
            rows.append(BenchRow(name, f"onnx {precision.name}", *sizes, *timed))
            model = random_model(config)
            timed = _time_torch(model, prompt, args.decode_tokens)
            del model
            rows.append(BenchRow(name, "torch eager fp32", *sizes, *timed))
    return BenchReport(
        tuple(rows),
        precision.name,
        args.threads,
        args.prefill_tokens,
        args.decode_tokens,
        os.getloadavg()[0],
    )


def format_bench(report: BenchReport) -> str:
    """The table and the three ratios the goals are stated in."""
    lines = [
        f"{report.threads} threads; prefill {report.prefill_tokens} tokens from an empty "
        f"cache; decode {report.decode_tokens} single-token steps after it; load average "
        f"{report.load_average:.1f} at the end (figures from a shared machine are noisy)",
        f"{'model':<20} {'runtime':<18} {'total':>8} {'active':>8} "
        f"{'prefill tok/s':>14} {'decode ms/tok':>14} {'best':>7}",
    ]
    for r in report.rows:
        lines.append(
            f"{r.model:<20} {r.runtime:<18} {r.total_params / 1e6:>7.1f}M "
            f"{r.active_params / 1e6:>7.1f}M {r.prefill_tokens_per_s:>14.1f} "
            f"{r.decode_ms_per_token:>14.2f} {r.decode_best_ms:>7.2f}"
        )
    onnx = f"onnx {report.precision}"

    def ratios(pick: Callable[[BenchRow], float]) -> tuple[float, float, float]:
        moe = pick(report.row("moe", onnx))
        return (
            pick(report.row("moe", "torch eager fp32")) / moe,
            moe / pick(report.row("dense, same active", onnx)),
            pick(report.row("dense, same total", onnx)) / moe,
        )

    median = ratios(lambda r: r.decode_ms_per_token)
    best = ratios(lambda r: r.decode_best_ms)
    lines += [
        "decode ratios, from the medians (from the best steps):",
        f"  MoE, ONNX vs PyTorch eager:     {median[0]:5.2f}x faster ({best[0]:.2f}x; goal >= 2)",
        f"  MoE vs dense with same active:  {median[1]:5.2f}x the time ({best[1]:.2f}x; "
        "goal <= 1.3)",
        f"  MoE vs dense with same total:   {median[2]:5.2f}x faster ({best[2]:.2f}x; goal >= 3)",
    ]
    return "\n".join(lines)
