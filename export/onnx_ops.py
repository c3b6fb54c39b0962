"""ONNX subgraph functions shared by every architecture: the graph under construction with
its weight storage (fp32, fp16, int8/int4 block-wise), linears, embeddings, norms, gated
MLPs and sparse experts. Each takes the `Graph` and input names and returns its output
names; nodes are named after checkpoint keys. Attention lives in `export.onnx_attention`.

Weights by precision (see README "Precisions"):
- fp32: float32 initializers, `MatMul` / `Gather`.
- fp16: float16 initializers, `Cast` to float32 (ONNX Runtime folds the cast of a constant
  at load; gathered expert rows and embeddings are cast after the `Gather`, so they stay
  fp16 in memory). Activations and the KV cache stay float32: CPU kernels are float32.
- int8/int4: `MatMulNBits` for linears, `GatherBlockQuantized` for embeddings and for the
  top-k experts' blocks (only the selected experts are dequantised). Router matrices and
  1-D weights stay float32. A matrix whose input dimension is not a multiple of 16 stays
  fp16 (both ops need blocks of a power of two >= 16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.checkpoint import Shapes
from export.errors import ExportError, UnsupportedArchitecture
from export.plan import PRECISIONS, Precision
from export.quantize import Quantized, block_size_for, quantize, quantize_unpacked
from export.spec import MoeSpec

OPSET = 20
MS = "com.microsoft"  # ONNX Runtime contrib ops (MatMulNBits, GatherBlockQuantized, GQA)
# Returns the checkpoint tensor of a key as float32; raises ExportError naming a missing key.
Weights = Callable[[str], np.ndarray]
# Called after each checkpoint tensor is read: key, tensors done, tensors in all.
Progress = Callable[[str, int, int], None]
# `MatMulNBits` accuracy_level 4: activations quantised to int8 per block inside the kernel
# (the fast CPU path); measured by `verify` with the weights' own error.
ACCURACY_LEVEL = 4
_INLINE_BYTES = 1024  # smaller initializers stay inside model.onnx


class TensorStore:
    """Writes initializer bytes to one external-data file as they are made, so a model of
    any size is never held in memory (and model.onnx stays under protobuf's 2 GB)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self._offset = 0

    def tensor(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        array = np.ascontiguousarray(array)
        # Page-aligned offsets let ONNX Runtime map large tensors instead of copying them.
        align = 4096 if array.nbytes >= 1 << 16 else 16
        pad = -self._offset % align
        self._file.write(b"\0" * pad)
        self._offset += pad
        self._file.write(array.data)
        tensor = onnx.TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        for key, value in (
            ("location", self.path.name),
            ("offset", str(self._offset)),
            ("length", str(array.nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL
        self._offset += array.nbytes
        return tensor

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class QuantizedMatrix:
    """Initializer names of a block-quantised (N, K) matrix."""

    codes: str
    scales: str
    rows: int
    columns: int
    bits: int
    block: int


@dataclass
class Graph:
    """Nodes and initializers under construction; `op` returns the output name(s)."""

    weights: Weights
    shapes: Shapes
    precision: Precision = field(default_factory=lambda: PRECISIONS["fp32"])
    store: TensorStore | None = None
    progress: Progress | None = None
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    _loaded: int = 0
    _matrices: dict[str, str | QuantizedMatrix] = field(default_factory=dict)
    _experts: dict[str, str | ExpertTable] = field(default_factory=dict)
    shared: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Outputs computed once and reused by every layer that needs the same values."""

    def once(self, key: str, build: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
        """The outputs `build` makes at the first call with `key`, reused by later calls."""
        if key not in self.shared:
            self.shared[key] = build()
        return self.shared[key]

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any) -> str:
        names = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, **attrs))
        return names[0]

    def ops(
        self, op_type: str, inputs: list[str], name: str, outputs: int, **attrs: Any
    ) -> list[str]:
        self.op(op_type, inputs, name, outputs, **attrs)
        return [f"{name}/output_{i}" for i in range(outputs)]

    def initializer(self, name: str, value: np.ndarray) -> str:
        if name not in self.initializers:
            if self.store is not None and value.nbytes >= _INLINE_BYTES:
                self.initializers[name] = self.store.tensor(name, value)
            else:
                self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        return self.initializer(name, value)

    def ints(self, *values: int) -> str:
        return self.const(
            f"/const/ints_{'_'.join(map(str, values))}".replace("-", "m"),
            np.array(values, dtype=np.int64),
        )

    def scalar(self, value: float) -> str:
        return self.const(f"/const/f32_{value!r}", np.array(value, dtype=np.float32))

    def load(self, key: str) -> np.ndarray:
        """The checkpoint tensor `key` as float32, checked against the spec's shape."""
        expected = self.shapes.get(key)
        if expected is None:
            raise ExportError(f"checkpoint tensor {key!r} is not part of the spec")
        # asanyarray: a SeededBlocks stand-in (export.quantize) stays one.
        value = np.asanyarray(self.weights(key), dtype=np.float32)
        if value.shape != expected:
            raise ExportError(
                f"checkpoint tensor {key!r} has shape {value.shape}, the config implies {expected}"
            )
        self._loaded += 1
        if self.progress is not None:
            self.progress(key, self._loaded, len(self.shapes))
        return value

    def weight(self, key: str, transpose: tuple[int, ...] | None = None) -> str:
        """The checkpoint tensor `key` as a float32 initializer named `key` (transposed if
        asked): 1-D weights, routers, and every matrix at fp32."""
        if key not in self.initializers:
            value = self.load(key)
            if transpose is not None:
                value = value.transpose(transpose)
            self.initializer(key, value)
        return key

    def fp16(self, key: str, value: np.ndarray, scope: str, cast: bool = True) -> str:
        """A float16 initializer `key`, and (when `cast`) its float32 view."""
        name = self.initializer(key, value.astype(np.float16))
        return self.op("Cast", [name], f"{scope}/Cast", to=TensorProto.FLOAT) if cast else name

    def quantized(
        self, key: str, value: np.ndarray, block: int, blocked: bool = False
    ) -> QuantizedMatrix:
        """`value` (..., N, K) quantised along K: initializers `key` (codes) and
        `key`_scales; `blocked` stores them as MatMulNBits wants, codes (N, blocks, bytes
        per block) and scales flat."""
        bits = self.precision.weight_bits
        if bits is None:
            raise ExportError(f"precision {self.precision.name} is not quantised")
        q: Quantized = quantize(value, bits, block)
        codes, scales = q.codes, q.scales
        if blocked:
            codes = codes.reshape(*scales.shape, block * bits // 8)
            scales = scales.reshape(-1)
        return QuantizedMatrix(
            self.initializer(key, codes),
            self.initializer(f"{key}_scales", scales),
            value.shape[-2],
            value.shape[-1],
            bits,
            block,
        )

    def block_for(self, columns: int) -> int | None:
        """The quantisation block for K = `columns`, None at float precisions."""
        if self.precision.weight_bits is None:
            return None
        return block_size_for(columns, self.precision.block_size)


def key_of(scope: str) -> str:
    """Node scope `/model/layers.0/self_attn` -> checkpoint prefix `model.layers.0.self_attn`."""
    return scope.lstrip("/").replace("/", ".")


def _matmul_nbits(g: Graph, x: str, m: QuantizedMatrix, codes: str, scales: str, name: str) -> str:
    return g.op(
        "MatMulNBits",
        [x, codes, scales],
        name,
        domain=MS,
        K=m.columns,
        N=m.rows,
        bits=m.bits,
        block_size=m.block,
        accuracy_level=ACCURACY_LEVEL,
    )


def linear(g: Graph, x: str, key: str, scope: str, quantize: bool = True) -> str:
    """x @ W.T for the checkpoint weight `key` (out, in). Floats are stored transposed
    (in, out) for MatMul; quantised weights keep (out, in) blocks for MatMulNBits. Routers
    pass `quantize=False` (routing is sensitive, and they are tiny)."""
    if key not in g._matrices:
        value = g.load(key)
        block = g.block_for(value.shape[1]) if quantize else None
        if block is not None:
            g._matrices[key] = g.quantized(key, value, block, blocked=True)
        elif g.precision.name == "fp32" or not quantize:
            g._matrices[key] = g.initializer(key, value.T)
        else:
            g._matrices[key] = g.fp16(key, value.T, f"/{key}")
    m = g._matrices[key]
    if isinstance(m, QuantizedMatrix):
        return _matmul_nbits(g, x, m, m.codes, m.scales, f"{scope}/MatMulNBits")
    return g.op("MatMul", [x, m], f"{scope}/MatMul")


@dataclass(frozen=True)
class Embedding:
    """The embedding table as stored: a float name, or quantised rows."""

    table: str | QuantizedMatrix


def embedding_table(g: Graph, key: str) -> Embedding:
    """Store the (V, H) table once: floats, or quantised rows for `GatherBlockQuantized`
    (codes (V, H * bits / 8), scales (V, H / block)), also used by a tied LM head."""
    if key not in g._matrices:
        value = g.load(key)
        block = g.block_for(value.shape[1])
        if block is not None:
            g._matrices[key] = g.quantized(key, value, block)
        elif g.precision.name == "fp32":
            g._matrices[key] = g.initializer(key, value)
        else:
            g._matrices[key] = g.fp16(key, value, f"/{key}", cast=False)
    return Embedding(g._matrices[key])


def embed(g: Graph, table: Embedding, ids: str, scope: str) -> str:
    """Rows `ids` (B, S) of the table -> (B, S, H) float32."""
    t = table.table
    if isinstance(t, QuantizedMatrix):
        return g.op(
            "GatherBlockQuantized",
            [t.codes, ids, t.scales],
            f"{scope}/GatherBlockQuantized",
            domain=MS,
            gather_axis=0,
            quantize_axis=1,
            block_size=t.block,
            bits=t.bits,
        )
    rows = g.op("Gather", [t, ids], f"{scope}/Gather")
    if g.initializers[t].data_type == TensorProto.FLOAT16:
        rows = g.op("Cast", [rows], f"{scope}/Cast", to=TensorProto.FLOAT)
    return rows


def tied_head(g: Graph, table: Embedding, x: str, scope: str) -> str:
    """x (N, H) @ table.T -> (N, V), sharing the embedding initializers."""
    t = table.table
    if isinstance(t, QuantizedMatrix):
        blocks = t.columns // t.block
        codes = g.op(
            "Reshape", [t.codes, g.ints(t.rows, blocks, t.block * t.bits // 8)], f"{scope}/Blocks"
        )
        scales = g.op("Reshape", [t.scales, g.ints(-1)], f"{scope}/Scales")
        return _matmul_nbits(g, x, t, codes, scales, f"{scope}/MatMulNBits")
    if g.initializers[t].data_type == TensorProto.FLOAT16:
        t = g.op("Cast", [t], f"{scope}/Cast", to=TensorProto.FLOAT)
    return g.op("Gemm", [x, t], f"{scope}/Gemm", transB=1)


@dataclass(frozen=True)
class ExpertTable:
    """A quantised (E, out, in) expert table laid out for `MatMulInteger`: codes (E, blocks,
    block, out) uint8 (4-bit: (E, blocks, block / 2, out), byte j holding rows j and
    j + block / 2), zero point 2^(bits-1), scales (E, blocks, 1, out)."""

    codes: str
    scales: str
    zero_point: str
    bits: int
    block: int


def _expert_table(g: Graph, key: str, in_out: bool) -> str | ExpertTable:
    if key in g._experts:
        return g._experts[key]
    value = g.load(key)  # (E, out, in), or (E, in, out) when `in_out`
    if in_out:
        value = np.ascontiguousarray(value.transpose(0, 2, 1))
    block = g.block_for(value.shape[-1])
    bits = g.precision.weight_bits
    table: str | ExpertTable
    if block is not None and bits is not None:
        experts, out, columns = value.shape
        q = quantize_unpacked(value, bits, block)
        codes = q.codes.reshape(experts, out, columns // block, block).transpose(0, 2, 3, 1)
        if bits == 4:
            half = block // 2
            codes = codes[:, :, :half] | (codes[:, :, half:] << 4)
        scales = q.scales.transpose(0, 2, 1)[:, :, None, :]  # (E, blocks, 1, out)
        table = ExpertTable(
            g.initializer(key, np.ascontiguousarray(codes)),
            g.initializer(f"{key}_scales", np.ascontiguousarray(scales)),
            g.const(f"/const/u8_{1 << (bits - 1)}", np.array(1 << (bits - 1), np.uint8)),
            bits,
            block,
        )
    elif g.precision.name == "fp32":
        table = g.initializer(key, value)
    else:
        table = g.initializer(key, value.astype(np.float16))
    g._experts[key] = table
    return table


def expert_product(
    g: Graph, key: str, index: str, x: str, shared: bool, scope: str, in_out: bool = False
) -> str:
    """W_e @ x for each token's top-k experts e = `index` (N, k) of the (E, out, in) table
    `key`; x is (N, in) when `shared` by the k experts, else (N, k, in). Returns (N, k, out).

    Only the selected experts' weights are read. Floats: their rows are gathered,
    (N, k, out, in), and applied as matrix-vector products. Quantised: their int8/int4 code
    blocks are gathered and multiplied without being dequantised, `MatMulInteger` against
    x quantised to uint8 (`DynamicQuantizeLinear`), one product per block of `in` so each
    block's scale applies to its partial sum (2.5x faster than dequantising the gathered
    blocks with `GatherBlockQuantized` and a float MatMul, on 2 CPU threads)."""
    t = _expert_table(g, key, in_out)
    if not isinstance(t, ExpertTable):
        rows = g.op("Gather", [t, index], f"{scope}/Gather")  # (N, k, out, in)
        if g.initializers[t].data_type == TensorProto.FLOAT16:
            rows = g.op("Cast", [rows], f"{scope}/Cast", to=TensorProto.FLOAT)
        axes = g.ints(1, -1) if shared else g.ints(-1)
        column = g.op("Unsqueeze", [x, axes], f"{scope}/Column")  # (N, 1 or k, in, 1)
        out = g.op("MatMul", [rows, column], f"{scope}/MatMul")  # (N, k, out, 1)
        return g.op("Squeeze", [out, g.ints(-1)], f"{scope}/Squeeze")
    xq, x_scale, x_zero = g.ops("DynamicQuantizeLinear", [x], f"{scope}/QuantizeInput", 3)
    if shared:  # (N, in) -> (N, 1, blocks, 1, block)
        blocks = g.op("Reshape", [xq, g.ints(0, -1, 1, t.block)], f"{scope}/InputBlocks")
        blocks = g.op("Unsqueeze", [blocks, g.ints(1)], f"{scope}/InputExperts")
    else:  # (N, k, in) -> (N, k, blocks, 1, block)
        blocks = g.op("Reshape", [xq, g.ints(0, 0, -1, 1, t.block)], f"{scope}/InputBlocks")
    codes = g.op("Gather", [t.codes, index], f"{scope}/Gather")  # (N, k, blocks, *, out)
    if t.bits == 4:
        low = g.op(
            "BitwiseAnd", [codes, g.const("/const/u8_15", np.array(15, np.uint8))], f"{scope}/Low"
        )
        high = g.op(
            "BitShift",
            [codes, g.const("/const/u8_4", np.array(4, np.uint8))],
            f"{scope}/High",
            direction="RIGHT",
        )
        codes = g.op(
            "Concat", [low, high], f"{scope}/Unpack", axis=-2
        )  # (N, k, blocks, block, out)
    sums = g.op(
        "MatMulInteger", [blocks, codes, x_zero, t.zero_point], f"{scope}/MatMulInteger"
    )  # (N, k, blocks, 1, out) int32
    sums = g.op("Cast", [sums], f"{scope}/Cast", to=TensorProto.FLOAT)
    scales = g.op("Gather", [t.scales, index], f"{scope}/ScalesGather")  # (N, k, blocks, 1, out)
    scaled = g.op("Mul", [sums, scales], f"{scope}/BlockScale")
    out = g.op("ReduceSum", [scaled, g.ints(2, 3)], f"{scope}/ReduceSum", keepdims=0)
    return g.op("Mul", [out, x_scale], f"{scope}/InputScale")  # (N, k, out)


def norm_weight(g: Graph, key: str, offset: float, scope: str) -> str:
    """The scale of an RMSNorm with the weight `key`: the weight as stored, or offset +
    weight (Gemma 3's (1 + weight), `ModelSpec.norm_offset`). The initializer keeps the
    checkpoint's value; ONNX Runtime folds the `Add` of two constants at load."""
    weight = g.weight(key)
    if offset == 0.0:
        return weight
    return g.op("Add", [weight, g.scalar(offset)], f"{scope}/WeightOffset")


def rms_norm(g: Graph, x: str, key: str | None, eps: float, scope: str, offset: float = 0.0) -> str:
    """Gemma RMSNorm: x * (mean(x^2) + eps)^-0.5 [* (offset + weight)] over the last axis.
    With a weight, one `SimplifiedLayerNormalization` node (ONNX Runtime's RMSNorm kernel)
    instead of six elementwise ones; without, the elementwise form (no scale tensor to hand
    it)."""
    if key is not None:
        return g.op(
            "SimplifiedLayerNormalization",
            [x, norm_weight(g, key, offset, scope)],
            f"{scope}/SimplifiedLayerNormalization",
            axis=-1,
            epsilon=eps,
        )
    square = g.op("Mul", [x, x], f"{scope}/Square")
    mean = g.op("ReduceMean", [square, g.ints(-1)], f"{scope}/ReduceMean", keepdims=1)
    shifted = g.op("Add", [mean, g.scalar(eps)], f"{scope}/AddEps")
    inverse = g.op("Pow", [shifted, g.scalar(-0.5)], f"{scope}/Pow")
    return g.op("Mul", [x, inverse], f"{scope}/Normalize")


def _gelu_tanh(g: Graph, x: str, scope: str) -> str:
    return g.op("Gelu", [x], f"{scope}/Gelu", approximate="tanh")


def _silu(g: Graph, x: str, scope: str) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x], f"{scope}/Sigmoid")], f"{scope}/Mul")


# Config activation names (`hidden_activation`, `hidden_act`) -> subgraph.
ACTIVATIONS: dict[str, Callable[[Graph, str, str], str]] = {
    "gelu_pytorch_tanh": _gelu_tanh,
    "silu": _silu,
}


def activation(g: Graph, x: str, name: str, scope: str) -> str:
    if name not in ACTIVATIONS:
        raise UnsupportedArchitecture(
            f"activation {name!r} has no ONNX export yet; supported: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name](g, x, scope)


def mlp(g: Graph, x: str, act: str, scope: str) -> str:
    """down(act(gate(x)) * up(x))."""
    gate = linear(g, x, f"{key_of(scope)}.gate_proj.weight", f"{scope}/gate_proj")
    up = linear(g, x, f"{key_of(scope)}.up_proj.weight", f"{scope}/up_proj")
    hidden = g.op("Mul", [activation(g, gate, act, f"{scope}/act_fn"), up], f"{scope}/Mul")
    return linear(g, hidden, f"{key_of(scope)}.down_proj.weight", f"{scope}/down_proj")


def sparse_experts(
    g: Graph,
    moe: MoeSpec,
    x: str,
    index: str,
    weights: str | None,
    scope: str,
    per_expert_input: bool = False,
) -> str:
    """sum_k weight_k * expert_k(x) for tokens x (N, H) (or (N, k, H) with
    `per_expert_input`) and each token's experts `index` (N, k), computing only the
    selected experts (`expert_product`). `weights` None leaves the sum unweighted (Llama 4
    scales the experts' input instead)."""
    key, size = key_of(scope), moe.expert_intermediate_size
    shared, in_out = not per_expert_input, moe.experts_in_out
    both = expert_product(
        g, f"{key}.gate_up_proj", index, x, shared, f"{scope}/gate_up_proj", in_out
    )  # (N, k, 2I)
    gate = g.op("Slice", [both, g.ints(0), g.ints(size), g.ints(-1)], f"{scope}/gate")
    up = g.op("Slice", [both, g.ints(size), g.ints(2 * size), g.ints(-1)], f"{scope}/up")
    hidden = g.op(
        "Mul", [activation(g, gate, moe.activation, f"{scope}/act_fn"), up], f"{scope}/Mul"
    )
    out = expert_product(
        g, f"{key}.down_proj", index, hidden, False, f"{scope}/down_proj", in_out
    )  # (N, k, H)
    if weights is not None:  # (N, k, H) * (N, k, 1)
        weight_column = g.op("Unsqueeze", [weights, g.ints(-1)], f"{scope}/WeightColumn")
        out = g.op("Mul", [out, weight_column], f"{scope}/Weighted")
    return g.op("ReduceSum", [out, g.ints(1)], f"{scope}/ReduceSum", keepdims=0)
