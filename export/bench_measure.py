"""One runtime timed in its own process for `python -m export bench-full`: subtitled's
(ONNX Runtime through the daemon's `KvCache`) or llama.cpp's (llama-cpp-python), on the
same token ids: load, RSS, prefill up to each context, a subtitle clause and its decode."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_bytes() -> int:
    return _status_bytes("VmRSS")


def _peak_rss_bytes() -> int:
    """This process's peak RSS since its exec (VmHWM: getrusage's maxrss also counts the
    parent's memory when the child was spawned by vfork)."""
    return _status_bytes("VmHWM")


class _Runner:
    """One runtime: feed ids after the held ones, return the argmax of the last logits."""

    def feed(self, ids: Sequence[int]) -> int:
        raise NotImplementedError


class _OnnxRunner(_Runner):
    def __init__(self, directory: Path, threads: int, contexts: int) -> None:
        from subtitled.translate.contract import MODEL_FILE
        from subtitled.translate.kvcache import KvCache
        from subtitled.translate.manifest import load_manifest
        from subtitled.translate.runtime import RuntimeConfig, open_session

        manifest = load_manifest(directory, check_files=False)
        session = open_session(directory / MODEL_FILE, threads)
        del contexts  # the cache grows as the daemon's does
        reserve = RuntimeConfig().reserve_tokens
        self.cache = KvCache(session, manifest.kv_layout, reserve_tokens=reserve)

    def feed(self, ids: Sequence[int]) -> int:
        return int(self.cache.forward(list(ids), 1)[-1].argmax())


class _LlamaRunner(_Runner):
    def __init__(self, path: Path, threads: int, contexts: int, chunk: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.model = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=contexts,
            n_batch=chunk,
            n_ubatch=chunk,
            n_threads=threads,
            n_threads_batch=threads,
            use_mmap=True,
            logits_all=False,
            verbose=False,
        )
        self.vocab = self.model.n_vocab()

    def feed(self, ids: Sequence[int]) -> int:
        self.model.eval(list(ids))
        pointer = self._llama_cpp.llama_get_logits_ith(self.model._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(pointer, shape=(self.vocab,)).argmax())


@dataclass(frozen=True)
class ContextFigures:
    context: int
    prefill_tokens_per_s: float
    """Filling the cache from the previous context to this one, in chunks."""
    decode_ms: float
    """Median of the decode steps after the clause."""
    clause_s: float
    """The clause fed in one call plus its decode steps."""


@dataclass(frozen=True)
class RuntimeFigures:
    runtime: str
    load_s: float
    rss_after_load: int
    peak_rss: int
    contexts: tuple[ContextFigures, ...]


def measure(
    runtime: str,
    path: Path,
    threads: int,
    contexts: Sequence[int],
    clause: int,
    chunk: int,
    vocab: int,
    seed: int,
) -> RuntimeFigures:
    """Load `path` under `runtime` ('onnx' or 'llama.cpp') and time it at each context."""
    capacity = max(contexts) + 2 * clause + 8
    began = time.perf_counter()
    runner: _Runner
    if runtime == "onnx":
        runner = _OnnxRunner(path, threads, capacity)
    else:
        runner = _LlamaRunner(path, threads, capacity, chunk)
    load_s = time.perf_counter() - began
    rss = _rss_bytes()
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=capacity).tolist()
    held = 0
    rows = []
    for context in sorted(contexts):
        began = time.perf_counter()
        fill = context - held
        while held < context:
            step = min(chunk, context - held)
            runner.feed(ids[held : held + step])
            held += step
        prefill = fill / max(time.perf_counter() - began, 1e-9)
        began = time.perf_counter()
        token = runner.feed(ids[held : held + clause])
        steps = []
        for _ in range(clause):
            start = time.perf_counter()
            token = runner.feed([token])
            steps.append(time.perf_counter() - start)
        clause_s = time.perf_counter() - began
        held += 2 * clause
        rows.append(ContextFigures(context, prefill, 1000 * statistics.median(steps), clause_s))
        print(f"  {runtime}: context {context}: {rows[-1]}", file=sys.stderr, flush=True)
    return RuntimeFigures(runtime, load_s, rss, _peak_rss_bytes(), tuple(rows))
