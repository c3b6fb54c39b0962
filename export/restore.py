"""The weights of an exported model directory back as a Hugging Face state dict.

An export keeps each checkpoint tensor under its own key: float matrices transposed for
`MatMul`, fp16 where the precision asks, and int8/int4 tables in the three block layouts
of `export.onnx_ops` (`MatMulNBits` codes (N, blocks, bytes) with flat scales;
`GatherBlockQuantized` rows (V, bytes) with (V, blocks) scales; expert tables
(E, blocks, block bytes, out) with (E, blocks, 1, out) scales; and the native kernel's
(E, out, bytes) with (E, out, blocks), `export.onnx_native`). `restore` undoes each
layout against the shapes the model's own parameters have, so a shipped model (whose
training checkpoint is gone) can be trained further (`python -m export train --init DIR`).
Quantised weights come back as the values they stand for, not the originals.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import ExportError
from export.onnx_native import unpack
from export.quantize import Quantized, dequantize
from subtitled.translate.contract import MODEL_FILE

Shape = tuple[int, ...]


def _bits(code_bytes: int, values: int, where: str) -> int:
    if code_bytes == values:
        return 8
    if 2 * code_bytes == values:
        return 4
    raise ExportError(f"{where}: {code_bytes} code bytes cannot hold {values} values")


def _rows(codes: np.ndarray, scales: np.ndarray, shape: Shape, key: str) -> np.ndarray:
    """`MatMulNBits` (N, blocks, bytes) or `GatherBlockQuantized` (V, bytes) codes with
    their scales: the rows of the (N, K) weight, as `export.quantize` packed them."""
    rows = codes.shape[0]  # as stored: `restore` checks the shape the model wants
    flat, blocks = codes.reshape(rows, -1), scales.reshape(rows, -1)
    bits = _bits(flat.shape[1], shape[-1], key)
    return dequantize(Quantized(flat, blocks, bits, flat.shape[1] * 8 // bits // blocks.shape[1]))


def _expert_table(codes: np.ndarray, scales: np.ndarray, columns: int, key: str) -> np.ndarray:
    """(E, out, in) from (E, blocks, block bytes, out) codes and (E, blocks, 1, out) scales;
    4-bit blocks hold the block's first half in low nibbles, its second half in high ones
    (`export.onnx_ops`)."""
    experts, blocks, code_bytes, out = codes.shape
    bits = _bits(blocks * code_bytes, columns, key)
    per_block = np.moveaxis(codes, 2, -1)  # (E, blocks, out, bytes)
    if bits == 4:
        per_block = np.concatenate([per_block & 15, per_block >> 4], -1)
    values = per_block.astype(np.float32) - (1 << (bits - 1))
    scaled = values * np.moveaxis(scales, 2, -1)  # (E, blocks, out, block)
    weight: np.ndarray = scaled.transpose(0, 2, 1, 3).reshape(experts, out, columns)
    return weight


def _consumers(graph: onnx.GraphProto) -> dict[str, set[str]]:
    """Tensor name -> op types reading it, looking through `Cast` (fp16 weights)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    result: dict[str, set[str]] = {}
    for name, nodes in readers.items():
        ops: set[str] = set()
        for node in nodes:
            if node.op_type == "Cast":
                ops |= {n.op_type for out in node.output for n in readers.get(out, [])}
            else:
                ops.add(node.op_type)
        result[name] = ops
    return result


def restore(
    directory: Path, shapes: Mapping[str, Shape], experts_in_out: bool = False
) -> dict[str, np.ndarray]:
    """Float32 arrays for every key of `shapes` found in `directory`'s graph (keys it does not
    hold, such as a tied head, are left out: the caller decides whether that is an error).
    `experts_in_out`: the checkpoint stores expert tables as (E, in, out) (Llama 4)."""
    path = directory / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"{path} does not exist: not an exported model directory")
    graph = onnx.load(str(path), load_external_data=True).graph
    tensors = {t.name: t for t in graph.initializer}
    readers = _consumers(graph)
    restored: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        if f"{key}_qmoe" in tensors:
            raise ExportError(
                f"{directory} holds {key!r} in QMoE's layout, which cannot be restored yet: "
                "export the model with --moe-kernel sparse"
            )
        if f"{key}_native" in tensors:  # subtitled's SparseExperts (export.onnx_native)
            codes = numpy_helper.to_array(tensors[f"{key}_native"])
            scales = numpy_helper.to_array(tensors[f"{key}_native_scales"]).astype(np.float32)
            columns = shape[1] if experts_in_out else shape[2]
            value = unpack(codes, scales, _bits(codes.shape[-1], columns, key))
            restored[key] = _checked(
                np.swapaxes(value, 1, 2) if experts_in_out else value, shape, key
            )
            continue
        if key not in tensors:
            continue
        value = numpy_helper.to_array(tensors[key])
        scales_key = f"{key}_scales"
        expert = value.ndim == 4 or (value.ndim == 3 and len(shape) == 3)
        if scales_key in tensors:
            scales = numpy_helper.to_array(tensors[scales_key]).astype(np.float32)
            if value.ndim in (2, 3):
                value = _rows(value, scales, shape, key)
            elif value.ndim == 4:
                columns = shape[1] if experts_in_out else shape[2]
                value = _expert_table(value, scales, columns, key)
            else:
                raise ExportError(f"exported tensor {key!r}: no quantised layout of {value.ndim}-D")
        elif value.ndim == 2 and "MatMul" in readers.get(key, set()):
            value = value.T  # float linears are stored (in, out) for MatMul
        if expert and experts_in_out:
            value = np.swapaxes(value, 1, 2)  # stored (E, out, in)
        restored[key] = _checked(value, shape, key)
    return restored


def _checked(value: np.ndarray, shape: Shape, key: str) -> np.ndarray:
    value = np.require(value, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
    if value.shape != shape:
        raise ExportError(
            f"exported tensor {key!r} restores to shape {value.shape}, the model wants {shape}"
        )
    return value


def restore_into(model: Any, config: Mapping[str, Any], directory: Path) -> int:
    """Load the weights of the exported model in `directory` into the transformers `model`
    of `config`: every parameter but a tied head must be there, in the same shape. Returns
    the number of tensors loaded."""
    import torch

    from export.families import spec_from_config

    layers = spec_from_config(dict(config)).layers
    in_out = any(layer.moe is not None and layer.moe.experts_in_out for layer in layers)
    state = model.state_dict()
    restored = restore(directory, {k: tuple(v.shape) for k, v in state.items()}, in_out)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(state) - set(restored) - tied)
    if missing:
        raise ExportError(f"{directory} has no tensor for {', '.join(missing[:5])}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in restored.items()}, strict=False)
    return len(restored)
