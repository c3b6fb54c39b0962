"""The ONNX Runtime shell: one session per model directory made by `export/`; the KV
cache tensors of a conversation live in `kvcache`.

The manifest is verified first (sha256 of every file, then the graph's inputs and outputs
against the manifest's), so a corrupt or mismatched directory fails with a message that
names the file. CPU by default; CUDA when onnxruntime-gpu and a GPU are present and the
provider is `auto` or `cuda`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from subtitled.errors import InvalidArgument, ModelError
from subtitled.translate import native
from subtitled.translate.contract import (
    CACHE_LENGTHS,
    CPU_PROVIDER,
    CUDA_PROVIDER,
    INPUT_IDS,
    LOGITS,
    MANIFEST_FILE,
    MODEL_FILE,
    POSITION_IDS,
    past_name,
    present_name,
)
from subtitled.translate.kvcache import KvCache
from subtitled.translate.manifest import Manifest, load_manifest
from subtitled.translate.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Provider = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class RuntimeConfig:
    """How the translation model runs."""

    threads: int = 2
    """Intra-op threads of the ONNX Runtime session (0: ONNX Runtime's default)."""
    provider: Provider = "auto"
    """'auto' uses CUDA when onnxruntime-gpu sees a GPU, else the CPU."""
    reserve_tokens: int = 256
    """Tokens beyond its window each sliding layer keeps, so rollbacks stay in place."""

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise InvalidArgument("threads must be >= 0")
        if self.reserve_tokens < 0:
            raise InvalidArgument("reserve_tokens must be >= 0")


def _providers(choice: Provider) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if choice == "cuda" and CUDA_PROVIDER not in available:
        raise ModelError(
            "translation provider 'cuda' needs onnxruntime-gpu and a GPU; "
            f"available: {', '.join(available)}"
        )
    if choice != "cpu" and CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def open_session(
    model_path: Path, threads: int, provider: Provider = "cpu", spinning: bool = False
) -> Any:
    """An ONNX Runtime session for an exported model, with the native kernel registered.

    Idle pool threads sleep unless `spinning`: the ASR shares these cores, and spinning
    threads were 2-3x slower under load (`python -m export bench` on a shared 2-core
    machine). Errors name the file, and a missing native kernel says how to build it.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    native.register(options)  # models exported with --moe-kernel native need it
    try:
        return onnxruntime.InferenceSession(
            str(model_path), options, providers=_providers(provider)
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        missing = native.missing_kernel_error(model_path, exc)
        raise (missing or ModelError(f"ONNX Runtime cannot load {model_path}: {exc}")) from exc


class OnnxModel:
    """A verified model directory: manifest, tokenizer and ONNX Runtime session."""

    def __init__(self, directory: Path, config: RuntimeConfig | None = None) -> None:
        self.directory = directory
        self.config = config or RuntimeConfig()
        if not directory.is_dir():
            raise ModelError(f"translation model directory {directory} does not exist")
        self.manifest: Manifest = load_manifest(directory)
        where = directory / MANIFEST_FILE
        if self.manifest.tokenizer is None or self.manifest.prompt is None:
            raise ModelError(
                f"{where} has no 'tokenizer' or no 'prompt': the model cannot translate "
                "(exported for architecture tests only?)"
            )
        self.prompt = self.manifest.prompt
        self.tokenizer = Tokenizer(directory / self.manifest.tokenizer)
        self.stop_ids = frozenset(
            self.tokenizer.token_id(s, f"{where} prompt.stop") for s in self.prompt.stop
        )
        self.session = open_session(
            directory / MODEL_FILE, self.config.threads, self.config.provider
        )
        self.device = "cuda" if CUDA_PROVIDER in self.session.get_providers() else "cpu"
        self._check_graph(where)
        self.layout = self.manifest.kv_layout
        try:  # the length slots: one window each, numbered 0 .. n-1
            self.new_cache()
        except ValueError as exc:
            raise ModelError(f"{where} kv_layout: {exc}") from exc
        self.vocab_size = self._vocab_size(where)
        if self.tokenizer.vocab_size > self.vocab_size:
            raise ModelError(
                f"tokenizer {self.tokenizer.path} has {self.tokenizer.vocab_size} tokens, "
                f"more than the model's {self.vocab_size} logits"
            )
        log.info("translation model %s loaded from %s (%s)", self.name, directory, self.device)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def max_positions(self) -> int | None:
        return self.manifest.max_positions

    def _check_graph(self, where: Path) -> None:
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        listed_inputs = {t.name for t in self.manifest.inputs}
        listed_outputs = {t.name for t in self.manifest.outputs}
        if graph_inputs != listed_inputs or graph_outputs != listed_outputs:
            raise ModelError(
                f"{self.directory / MODEL_FILE} does not match {where}: graph inputs/outputs "
                f"{sorted(graph_inputs ^ listed_inputs) + sorted(graph_outputs ^ listed_outputs)}"
                " differ"
            )
        expected = {INPUT_IDS, POSITION_IDS, LOGITS}
        for kv in self.manifest.kv_layout:
            for t in kv.tensors:
                expected |= {past_name(kv.layer, t), present_name(kv.layer, t)}
            if kv.length_slot is not None:
                expected.add(CACHE_LENGTHS)
        missing = expected - graph_inputs - graph_outputs
        if missing:
            raise ModelError(f"{where}: the graph lacks {', '.join(sorted(missing))}")

    def _vocab_size(self, where: Path) -> int:
        logits = next(t for t in self.manifest.outputs if t.name == LOGITS)
        size = logits.shape[-1] if logits.shape else None
        if not isinstance(size, int):
            raise ModelError(f"{where}: output 'logits' must have a fixed vocabulary dimension")
        return size

    def new_cache(self) -> KvCache:
        return KvCache(self.session, self.layout, self.config.reserve_tokens, self.device)
