"""The checkpoint tensors a spec implies (every key with its shape), and the lazy reader of
a checkpoint directory.

The ONNX builder checks each tensor it reads against this map, so a checkpoint that does
not match its config fails with the key, the expected and the actual shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ConfigKeyError, ExportError
from export.spec import ModelSpec

Shapes = dict[str, tuple[int, ...]]


def checkpoint_shapes(spec: ModelSpec) -> Shapes:
    """Key -> shape of every tensor of a transformers checkpoint of `spec` (an untied LM
    head included, a tied one left out: it is the embedding table)."""
    hidden = spec.hidden_size
    shapes: Shapes = {"model.embed_tokens.weight": (spec.vocab_size, hidden)}
    for layer in spec.layers:
        prefix = f"model.layers.{layer.index}"
        for name, shape in layer.attention.projections(hidden).items():
            shapes[f"{prefix}.self_attn.{name}.weight"] = shape
        mlps = [layer.mlp] if layer.mlp is not None else []
        if layer.moe is not None:
            moe = layer.moe
            size = moe.expert_intermediate_size
            e = moe.num_experts
            shapes[f"{prefix}.{moe.router_key}"] = (e, hidden)
            gate_up, down = ((e, hidden, 2 * size), (e, size, hidden))
            if not moe.experts_in_out:
                gate_up, down = ((e, 2 * size, hidden), (e, hidden, size))
            shapes[f"{prefix}.{moe.experts_key}.gate_up_proj"] = gate_up
            shapes[f"{prefix}.{moe.experts_key}.down_proj"] = down
            if moe.correction_bias_key is not None:
                shapes[f"{prefix}.{moe.correction_bias_key}"] = (e,)
            if moe.shared is not None:
                mlps.append(moe.shared)
        for mlp in mlps:
            size = mlp.intermediate_size
            shapes[f"{prefix}.{mlp.key}.gate_proj.weight"] = (size, hidden)
            shapes[f"{prefix}.{mlp.key}.up_proj.weight"] = (size, hidden)
            shapes[f"{prefix}.{mlp.key}.down_proj.weight"] = (hidden, size)
        for vector in layer.vectors:
            shapes[f"{prefix}.{vector.key}"] = (vector.width,)
    for vector in spec.vectors:
        shapes[vector.key] = (vector.width,)
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, hidden)
    return shapes


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


# Other spellings of a key on disk: a text model inside a multimodal checkpoint (Gemma 4's
# `Gemma4ForConditionalGeneration` stores `model.language_model.layers...`), Mixtral's
# `block_sparse_moe` (transformers `conversion_mapping.py`, "mixtral").
KEY_ALIASES = (("model.", "model.language_model."), (".mlp.", ".block_sparse_moe."))
# Fused expert tables stored per expert on disk (conversion_mapping.py "qwen2_moe", used by
# Qwen3-MoE and DeepSeek-V3, and "mixtral"): table -> per-expert weight names to
# concatenate along the output dimension, one tuple per naming.
PER_EXPERT = {
    "gate_up_proj": (("gate_proj", "up_proj"), ("w1", "w3")),
    "down_proj": (("down_proj",), ("w2",)),
}


class SafetensorsCheckpoint:
    """The tensors of a Hugging Face checkpoint directory, read lazily one at a time with
    `safetensors.safe_open` (memory-mapped; never pickle): one `*.safetensors` file, or
    shards listed in `model.safetensors.index.json`. Calling it with a key returns that
    tensor as float32 (bf16 and fp16 widened); a fused expert table stored per expert is
    stacked from its experts' tensors."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        self.directory = directory
        index = directory / "model.safetensors.index.json"
        self._files: dict[str, Path] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ExportError(f"cannot read the shard index {index}: {exc}") from exc
            self._files = {key: directory / name for key, name in weight_map.items()}
        else:
            shards = sorted(directory.glob("*.safetensors"))
            if not shards:
                raise ExportError(
                    f"no *.safetensors file in {directory} (pickled .bin checkpoints are not "
                    "read: convert them with transformers' save_pretrained)"
                )
            for shard in shards:
                with safe_open(str(shard), framework="pt") as f:
                    self._files.update((key, shard) for key in f.keys())  # noqa: SIM118

    def keys(self) -> set[str]:
        return set(self._files)

    def _spellings(self, key: str) -> list[str]:
        names = [key]
        for old, new in KEY_ALIASES:
            names += [name.replace(old, new, 1) for name in names if old in name]
        return names

    def _find(self, key: str) -> str | None:
        return next((name for name in self._spellings(key) if name in self._files), None)

    def _read(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        path = self._files[name]
        try:
            with safe_open(str(path), framework="pt") as f:
                tensor = f.get_tensor(name)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read tensor {name!r} from {path}: {exc}") from exc
        value: np.ndarray = tensor.float().numpy()
        return value

    def _stacked(self, key: str) -> np.ndarray | None:
        """A fused (E, out, in) expert table from per-expert (out, in) weights."""
        base, _, table = key.rpartition(".")
        for parts in PER_EXPERT.get(table, ()):
            first = self._find(f"{base}.0.{parts[0]}.weight")
            if first is None:
                continue
            experts: list[np.ndarray] = []
            while self._find(f"{base}.{len(experts)}.{parts[0]}.weight") is not None:
                rows = []
                for part in parts:
                    name = self._find(f"{base}.{len(experts)}.{part}.weight")
                    if name is None:
                        raise ExportError(
                            f"checkpoint tensor {base}.{len(experts)}.{part}.weight is missing "
                            f"from {self.directory}"
                        )
                    rows.append(self._read(name))
                experts.append(np.concatenate(rows, axis=0))
            return np.stack(experts)
        return None

    def __call__(self, key: str) -> np.ndarray:
        name = self._find(key)
        if name is not None:
            return self._read(name)
        stacked = self._stacked(key)
        if stacked is not None:
            return stacked
        raise ExportError(f"checkpoint tensor {key!r} is missing from {self.directory}")
