"""The ONNX Runtime shell: one session per model directory made by `export/`, and the KV
cache tensors of one conversation.

The manifest is verified first (sha256 of every file, then the graph's inputs and outputs
against the manifest's), so a corrupt or mismatched directory fails with a message that
names the file. CPU by default; CUDA when onnxruntime-gpu and a GPU are present and the
provider is `auto` or `cuda`. Calls go through IO binding: outputs are bound to the
device and the `present` values are bound back as the next call's `past` without a copy
(on CPU their numpy views share ORT's buffers); only a rollback slices them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from subtitled.errors import ModelError
from subtitled.translate import native
from subtitled.translate.cache import CacheLedger
from subtitled.translate.manifest import KvLayer, Manifest, load_manifest
from subtitled.translate.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
Provider = Literal["auto", "cpu", "cuda"]
FloatArray = npt.NDArray[np.float32]


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
            raise ValueError("threads must be >= 0")
        if self.reserve_tokens < 0:
            raise ValueError("reserve_tokens must be >= 0")


def _providers(choice: Provider) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if choice == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError(
            "translation provider 'cuda' needs onnxruntime-gpu and a GPU; "
            f"available: {', '.join(available)}"
        )
    if choice != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _past_name(kv: KvLayer, tensor: str) -> str:
    return f"past_key_values.{kv.layer}.{tensor}"


def _present_name(kv: KvLayer, tensor: str) -> str:
    return f"present.{kv.layer}.{tensor}"


class OnnxModel:
    """A verified model directory: manifest, tokenizer and ONNX Runtime session."""

    def __init__(self, directory: Path, config: RuntimeConfig | None = None) -> None:
        import onnxruntime

        self.directory = directory
        self.config = config or RuntimeConfig()
        if not directory.is_dir():
            raise ModelError(f"translation model directory {directory} does not exist")
        self.manifest: Manifest = load_manifest(directory)
        where = directory / "manifest.json"
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
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        # no busy-waiting between ops: the ASR shares these cores, and spinning threads
        # were 2-3x slower under load (export bench on a shared 2-core machine)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        native.register(options)  # models exported with --moe-kernel native need it
        model_path = directory / MODEL_FILE
        try:
            self.session = onnxruntime.InferenceSession(
                str(model_path), options, providers=_providers(self.config.provider)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            missing = native.missing_kernel_error(model_path, exc)
            raise (missing or ModelError(f"ONNX Runtime cannot load {model_path}: {exc}")) from exc
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self._check_graph(where)
        self.layout = self.manifest.kv_layout
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
        expected = {"input_ids", "position_ids", "logits"}
        for kv in self.manifest.kv_layout:
            for t in kv.tensors:
                expected |= {_past_name(kv, t), _present_name(kv, t)}
        missing = expected - graph_inputs - graph_outputs
        if missing:
            raise ModelError(f"{where}: the graph lacks {', '.join(sorted(missing))}")

    def _vocab_size(self, where: Path) -> int:
        logits = next(t for t in self.manifest.outputs if t.name == "logits")
        size = logits.shape[-1] if logits.shape else None
        if not isinstance(size, int):
            raise ModelError(f"{where}: output 'logits' must have a fixed vocabulary dimension")
        return size

    def new_cache(self) -> KvCache:
        return KvCache(self)


class KvCache:
    """The cache tensors of one conversation, kept in step with a `CacheLedger`.

    Each layer's tensors are (1, n_kv_heads, tokens, head_dim); a sliding layer keeps up
    to `window + reserve` tokens and is fed only its last `window`.
    """

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.ledger = CacheLedger([kv.window for kv in model.layout], model.config.reserve_tokens)
        self._values: dict[str, Any] = {}
        self.reset()
        self.prefilled_tokens = 0
        self.calls = 0

    def reset(self) -> None:
        self.ledger = CacheLedger(self.ledger.windows, self.ledger.reserve)
        self._values = {
            _past_name(kv, t): np.zeros((1, kv.n_kv_heads, 0, kv.head_dim), np.float32)
            for kv in self.model.layout
            for t in kv.tensors
        }

    def rollback(self, keep: int) -> None:
        """Drop every token from position `keep` on (the ledger checks it is exact)."""
        if keep == self.ledger.held:
            return
        if keep == 0:
            self.reset()
            return
        drop = self.ledger.held - keep
        self.ledger.rollback(keep)
        for kv in self.model.layout:
            for t in kv.tensors:
                name = _past_name(kv, t)
                array = self._host(name)
                self._values[name] = np.ascontiguousarray(array[:, :, : array.shape[2] - drop])

    def _host(self, name: str) -> FloatArray:
        value = self._values[name]
        if isinstance(value, np.ndarray):
            return value
        array: FloatArray = value.numpy()
        return array

    def forward(self, ids: Sequence[int]) -> FloatArray:
        """Feed `ids` after the held tokens; return their logits, (len(ids), vocab)."""
        if not ids:
            raise ValueError("nothing to feed")
        model = self.model
        start = self.ledger.held
        binding = model.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        binding.bind_cpu_input(
            "position_ids", np.arange(start, start + len(ids), dtype=np.int64)[None, :]
        )
        for kv in model.layout:
            for t in kv.tensors:
                name = _past_name(kv, t)
                value = self._values[name]
                if kv.window is not None:
                    held = value.shape[2] if isinstance(value, np.ndarray) else value.shape()[2]
                    if held > kv.window:
                        value = np.ascontiguousarray(self._host(name)[:, :, -kv.window :])
                if isinstance(value, np.ndarray):
                    binding.bind_cpu_input(name, value)
                else:
                    binding.bind_ortvalue_input(name, value)
        names = [o.name for o in model.session.get_outputs()]
        for name in names:
            binding.bind_output(name, model.device)
        model.session.run_with_iobinding(binding)
        outputs = dict(zip(names, binding.get_outputs(), strict=True))
        self.ledger.append(ids)
        self.prefilled_tokens += len(ids)
        self.calls += 1
        lengths = self.ledger.lengths()
        for index, kv in enumerate(model.layout):
            for t in kv.tensors:
                self._absorb(
                    kv, _past_name(kv, t), outputs[_present_name(kv, t)], len(ids), lengths[index]
                )
        logits: FloatArray = outputs["logits"].numpy()[0]
        return logits

    def _absorb(self, kv: KvLayer, name: str, present: Any, fed: int, keep: int) -> None:
        if kv.window is None:
            self._values[name] = present  # past + new, bound back as is
            return
        fresh = present.numpy()
        if fed <= kv.window:
            fresh = np.concatenate([self._host(name), fresh[:, :, -fed:]], axis=2)
        if fresh.shape[2] < keep:
            raise RuntimeError(f"layer {kv.layer}: cache holds {fresh.shape[2]} < {keep} tokens")
        self._values[name] = np.ascontiguousarray(fresh[:, :, -keep:]) if keep else fresh[:, :, :0]
