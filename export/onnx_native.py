"""subtitled's native `SparseExperts` (domain ai.subtitled, `subtitled/translate/
sparse_experts.c`) for quantised experts of any family.

One node computes each token's selected experts from their int8/int4 blocks in place:
the graph keeps the family's own routing (softmax, sigmoid, grouped, Gemma 4's
per-expert scale...) and hands the node the indices and weights (N, k). Where ONNX Runtime's
own ops fall short on CPU (QMoE: SwiGLU with softmax routing only, and slower than a
gather at one token; MatMulNBits on gathered weights: a slow generic path), this reads the
selected experts' blocks once per call whatever the number of tokens, in one node. Needs
the kernel library at run time (built at install; `subtitled.translate.native`).

Layout (the kernel's): codes (E, out, in * bits / 8) uint8 with the zero point 2^(bits-1),
blocks along `in`; at 4 bits byte j of a block holds element j (low nibble) and element
j + block / 2 (high nibble); scales (E, out, in / block) float32. gate_up stacks the gate
rows over the up rows, (E, 2I, H); down is (E, H, I).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from export.errors import ExportError
from export.onnx_ops import Graph, key_of
from export.plan import Precision
from export.quantize import quantize_unpacked
from export.spec import MoeSpec
from subtitled.translate.native import DOMAIN, OP, library_path

# The kernel's `activation` attribute for each config activation name.
_ACTIVATION = {"silu": 0, "gelu_pytorch_tanh": 1}


def moe_kernel_precision(precision: Precision, kernel: str) -> Precision:
    """`precision` with the experts' kernel of `--moe-kernel`: auto (native when the
    library was built, else qmoe), native, qmoe (ONNX Runtime's QMoE where it fits, else the
    sparse gather path) or sparse."""
    if kernel == "auto":
        kernel = "native" if library_path() is not None else "qmoe"
    if kernel == "native":
        if library_path() is None:
            raise ExportError(
                "--moe-kernel native: subtitled's native kernel was not built at install "
                "(no C compiler then?), and the exported model could not run here"
            )
        # where the kernel does not fit (float precisions, odd sizes): QMoE, else sparse
        return dataclasses.replace(precision, native_moe=True, fused_moe=True)
    if kernel == "qmoe":
        return dataclasses.replace(precision, native_moe=False, fused_moe=True)
    if kernel == "sparse":
        return dataclasses.replace(precision, native_moe=False, fused_moe=False)
    raise ExportError(f"--moe-kernel {kernel!r}: expected auto, native, qmoe or sparse")


def native_fits(g: Graph, moe: MoeSpec, hidden_size: int) -> bool:
    """Whether the native kernel computes these experts at this precision."""
    return (
        g.precision.native_moe
        and g.precision.weight_bits in (4, 8)
        and moe.activation in _ACTIVATION
        and g.block_for(hidden_size) is not None
        and g.block_for(hidden_size) == g.block_for(moe.expert_intermediate_size)
    )


def pack(value: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(E, out, in) float -> the kernel's codes and scales."""
    q = quantize_unpacked(value, bits, block)
    codes = q.codes
    if bits == 4:
        *lead, columns = codes.shape
        blocks = codes.reshape(*lead, columns // block, 2, block // 2)
        codes = (blocks[..., 0, :] | (blocks[..., 1, :] << 4)).reshape(*lead, columns // 2)
    return np.ascontiguousarray(codes), np.ascontiguousarray(q.scales)


def unpack(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """The float32 (E, out, in) table the kernel's codes and scales stand for."""
    if bits == 4:
        *lead, half_columns = codes.shape
        block = 2 * half_columns // scales.shape[-1]
        blocks = codes.reshape(*lead, -1, block // 2)
        codes = np.concatenate([blocks & 15, blocks >> 4], -1).reshape(*lead, 2 * half_columns)
    block = codes.shape[-1] // scales.shape[-1]
    values = codes.astype(np.float32) - (1 << (bits - 1))
    values = values.reshape(*codes.shape[:-1], -1, block) * scales[..., None]
    result: np.ndarray = values.reshape(codes.shape)
    return result


def _table(g: Graph, key: str, in_out: bool) -> tuple[str, str]:
    value = g.load(key)  # (E, out, in), or (E, in, out) when `in_out`
    if in_out:
        value = value.transpose(0, 2, 1)
    bits, block = g.precision.weight_bits, g.block_for(value.shape[-1])
    assert bits is not None and block is not None  # native_fits
    codes, scales = pack(value, bits, block)
    return g.initializer(f"{key}_native", codes), g.initializer(f"{key}_native_scales", scales)


def native_experts(
    g: Graph, moe: MoeSpec, x: str, index: str, weights: str, weighted: bool, scope: str
) -> str:
    """sum_k weight_k * expert_k(x) (plain sum unless `weighted`) for tokens x (N, H), or
    (N, k, H) with one input per slot, and experts `index` (N, k): (N, H)."""
    key = key_of(scope)
    gate_up, gate_up_scales = _table(g, f"{key}.gate_up_proj", moe.experts_in_out)
    down, down_scales = _table(g, f"{key}.down_proj", moe.experts_in_out)
    return g.op(
        OP,
        [x, index, weights, gate_up, gate_up_scales, down, down_scales],
        f"{scope}/{OP}",
        domain=DOMAIN,
        bits=g.precision.weight_bits,
        block_size=g.block_for(moe.expert_intermediate_size),
        activation=_ACTIVATION[moe.activation],
        weighted=int(weighted),
    )
