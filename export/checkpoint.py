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
        a = layer.attention
        projections = {"q_proj": a.q_size, "k_proj": a.kv_size}
        if not a.k_eq_v:
            projections["v_proj"] = a.kv_size
        for name, rows in projections.items():
            shapes[f"{prefix}.self_attn.{name}.weight"] = (rows, hidden)
        shapes[f"{prefix}.self_attn.o_proj.weight"] = (hidden, a.q_size)
        if layer.mlp is not None:
            size = layer.mlp.intermediate_size
            shapes[f"{prefix}.mlp.gate_proj.weight"] = (size, hidden)
            shapes[f"{prefix}.mlp.up_proj.weight"] = (size, hidden)
            shapes[f"{prefix}.mlp.down_proj.weight"] = (hidden, size)
        if layer.moe is not None:
            moe = layer.moe
            size = moe.expert_intermediate_size
            shapes[f"{prefix}.{moe.router_key}"] = (moe.num_experts, hidden)
            shapes[f"{prefix}.{moe.experts_key}.gate_up_proj"] = (moe.num_experts, 2 * size, hidden)
            shapes[f"{prefix}.{moe.experts_key}.down_proj"] = (moe.num_experts, hidden, size)
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


# Where a text model's keys live in multimodal checkpoints (Gemma 4's
# `Gemma4ForConditionalGeneration` stores `model.language_model.layers...`).
KEY_PREFIXES = (("model.", "model.language_model."),)


class SafetensorsCheckpoint:
    """The tensors of a Hugging Face checkpoint directory, read lazily one at a time with
    `safetensors.safe_open` (memory-mapped; never pickle): one `*.safetensors` file, or
    shards listed in `model.safetensors.index.json`. Calling it with a key returns that
    tensor as float32 (bf16 and fp16 widened)."""

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

    def _name(self, key: str) -> str:
        if key in self._files:
            return key
        for prefix, alias in KEY_PREFIXES:
            if key.startswith(prefix) and alias + key[len(prefix) :] in self._files:
                return alias + key[len(prefix) :]
        raise ExportError(f"checkpoint tensor {key!r} is missing from {self.directory}")

    def __call__(self, key: str) -> np.ndarray:
        from safetensors import safe_open

        name = self._name(key)
        path = self._files[name]
        try:
            with safe_open(str(path), framework="pt") as f:
                tensor = f.get_tensor(name)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read tensor {name!r} from {path}: {exc}") from exc
        value: np.ndarray = tensor.float().numpy()
        return value
