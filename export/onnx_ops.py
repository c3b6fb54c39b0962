"""ONNX subgraph functions shared by every architecture: norms, RoPE, attention with an
explicit KV cache, gated MLPs and sparse experts. Each takes the `Graph` under construction
and input names, and returns its output names; nodes are named after checkpoint keys.

Sliding layers return at most `window` cache tokens; K=V layers keep only V (K is recomputed
as RoPE(V * k_norm.weight) over the cache, see `AttentionSpec.k_eq_v`). The sparse experts
gather the weights of each token's top-k experts and multiply only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.checkpoint import Shapes
from export.errors import ExportError, UnsupportedArchitecture
from export.spec import AttentionSpec, LayerSpec, ModelSpec, MoeSpec, RopeSpec

OPSET = 20
# Returns the checkpoint tensor of a key as float32; raises ExportError naming a missing key.
Weights = Callable[[str], np.ndarray]
_NEG = -1e30  # additive mask; a finite value keeps fully-masked padding rows NaN-free


@dataclass
class Graph:
    """Nodes and initializers under construction; `op` returns the output name(s)."""

    weights: Weights
    shapes: Shapes
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any) -> str:
        names = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, **attrs))
        return names[0]

    def ops(
        self, op_type: str, inputs: list[str], name: str, outputs: int, **attrs: Any
    ) -> list[str]:
        self.op(op_type, inputs, name, outputs, **attrs)
        return [f"{name}/output_{i}" for i in range(outputs)]

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def ints(self, *values: int) -> str:
        return self.const(
            f"/const/ints_{'_'.join(map(str, values))}".replace("-", "m"),
            np.array(values, dtype=np.int64),
        )

    def scalar(self, value: float) -> str:
        return self.const(f"/const/f32_{value!r}", np.array(value, dtype=np.float32))

    def weight(self, key: str, transpose: tuple[int, ...] | None = None) -> str:
        """The checkpoint tensor `key` as an initializer named `key` (transposed if asked)."""
        if key not in self.initializers:
            value = np.asarray(self.weights(key), dtype=np.float32)
            expected = self.shapes.get(key)
            if expected is None:
                raise ExportError(f"checkpoint tensor {key!r} is not part of the spec")
            if value.shape != expected:
                raise ExportError(
                    f"checkpoint tensor {key!r} has shape {value.shape}, "
                    f"the config implies {expected}"
                )
            if transpose is not None:
                value = np.ascontiguousarray(value.transpose(transpose))
            self.initializers[key] = numpy_helper.from_array(value, key)
        return key


@dataclass(frozen=True)
class Positions:
    """Shared position tensors: query positions (S,), their first value, the sequence length."""

    query: str
    start: str
    length: str
    position_ids: str


def linear(g: Graph, x: str, key: str, scope: str) -> str:
    """x @ W.T for the checkpoint weight `key` (out, in), stored as (in, out)."""
    return g.op("MatMul", [x, g.weight(key, (1, 0))], f"{scope}/MatMul")


def rms_norm(g: Graph, x: str, key: str | None, eps: float, scope: str) -> str:
    """Gemma RMSNorm: x * (mean(x^2) + eps)^-0.5 [* weight] over the last axis."""
    square = g.op("Mul", [x, x], f"{scope}/Square")
    mean = g.op("ReduceMean", [square, g.ints(-1)], f"{scope}/ReduceMean", keepdims=1)
    shifted = g.op("Add", [mean, g.scalar(eps)], f"{scope}/AddEps")
    inverse = g.op("Pow", [shifted, g.scalar(-0.5)], f"{scope}/Pow")
    normed = g.op("Mul", [x, inverse], f"{scope}/Normalize")
    if key is None:
        return normed
    return g.op("Mul", [normed, g.weight(key)], f"{scope}/Scale")


def inv_freq(rope: RopeSpec, head_dim: int) -> np.ndarray:
    """RoPE inverse frequencies (head_dim / 2,), as transformers' rope init functions; the
    proportional type spaces the rotating frequencies over the whole head_dim and gives the
    rest frequency 0 (`_compute_proportional_rope_parameters`)."""
    if rope.rope_type == "default":
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim
        return (1.0 / rope.theta**exponents).astype(np.float32)
    if rope.rope_type == "proportional":
        angles = int(rope.partial_rotary_factor * head_dim // 2)
        exponents = np.arange(0, 2 * angles, 2, dtype=np.float32) / head_dim
        rotating = 1.0 / rope.theta**exponents
        return np.concatenate([rotating, np.zeros(head_dim // 2 - angles)]).astype(np.float32)
    raise UnsupportedArchitecture(f"rope_type {rope.rope_type!r} has no ONNX export yet")


def rope_tables(
    g: Graph, positions: str, rope: RopeSpec, head_dim: int, scope: str
) -> tuple[str, str]:
    """cos, sin of `positions` (any shape P) as (*P, head_dim) tensors."""
    freq = g.const(f"{scope}/inv_freq", inv_freq(rope, head_dim))
    as_float = g.op("Cast", [positions], f"{scope}/Cast", to=TensorProto.FLOAT)
    column = g.op("Unsqueeze", [as_float, g.ints(-1)], f"{scope}/Unsqueeze")
    angles = g.op("Mul", [column, freq], f"{scope}/Angles")  # (*P, d/2)
    both = g.op("Concat", [angles, angles], f"{scope}/Concat", axis=-1)  # (*P, d)
    return g.op("Cos", [both], f"{scope}/Cos"), g.op("Sin", [both], f"{scope}/Sin")


def apply_rope(g: Graph, x: str, cos: str, sin: str, head_dim: int, scope: str) -> str:
    """x * cos + rotate_half(x) * sin over the last axis (transformers `apply_rotary_pos_emb`)."""
    half = head_dim // 2
    first = g.op("Slice", [x, g.ints(0), g.ints(half), g.ints(-1)], f"{scope}/SliceFirst")
    second = g.op("Slice", [x, g.ints(half), g.ints(head_dim), g.ints(-1)], f"{scope}/SliceSecond")
    negated = g.op("Neg", [second], f"{scope}/Neg")
    rotated = g.op("Concat", [negated, first], f"{scope}/RotateHalf", axis=-1)
    return g.op(
        "Add",
        [g.op("Mul", [x, cos], f"{scope}/MulCos"), g.op("Mul", [rotated, sin], f"{scope}/MulSin")],
        f"{scope}/Add",
    )


def _heads(g: Graph, x: str, heads: int, head_dim: int, scope: str) -> str:
    """(B, S, heads * d) -> (B, S, heads, d)."""
    return g.op("Reshape", [x, g.ints(0, 0, heads, head_dim)], f"{scope}/Reshape")


def attention_mask(
    g: Graph, pos: Positions, past: str, window: int | None, scope: str
) -> tuple[str, str]:
    """Key positions (T,) of past + new tokens, and the additive mask (S, T): causal, and
    for sliding layers only keys with position > query - window (transformers' overlay)."""
    past_len = g.op(
        "Gather", [g.op("Shape", [past], f"{scope}/PastShape"), g.ints(2)], f"{scope}/PastLength"
    )
    past_len = g.op("Squeeze", [past_len], f"{scope}/PastLengthScalar")
    first = g.op("Sub", [pos.start, past_len], f"{scope}/FirstKey")
    end = g.op("Add", [pos.start, pos.length], f"{scope}/EndKey")
    keys = g.op(
        "Range",
        [first, end, g.const("/const/one_i64", np.array(1, np.int64))],
        f"{scope}/KeyPositions",
    )  # (T,)
    query_col = g.op("Unsqueeze", [pos.query, g.ints(1)], f"{scope}/QueryColumn")  # (S, 1)
    allowed = g.op("LessOrEqual", [keys, query_col], f"{scope}/Causal")  # (S, T)
    if window is not None:
        oldest = g.op(
            "Sub",
            [query_col, g.const(f"/const/i64_{window}", np.array(window, np.int64))],
            f"{scope}/Oldest",
        )
        recent = g.op("Greater", [keys, oldest], f"{scope}/InWindow")
        allowed = g.op("And", [allowed, recent], f"{scope}/Allowed")
    mask = g.op("Where", [allowed, g.scalar(0.0), g.scalar(_NEG)], f"{scope}/Mask")
    return keys, mask


def attention(
    g: Graph,
    spec: ModelSpec,
    layer: LayerSpec,
    x: str,
    pos: Positions,
    q_rope: tuple[str, str],
    scope: str,
) -> tuple[str, dict[str, str]]:
    """Self-attention of one layer; returns its output (B, S, H) and present cache by tensor."""
    a: AttentionSpec = layer.attention
    eps = spec.rms_norm_eps
    cos, sin = q_rope  # (B, 1, S, d)
    past = {t: f"past_key_values.{layer.index}.{t}" for t in a.cache_tensors}
    q = _heads(
        g,
        linear(g, x, f"{key_of(scope)}.q_proj.weight", f"{scope}/q_proj"),
        a.n_heads,
        a.head_dim,
        f"{scope}/q_heads",
    )
    if a.qk_norm:
        q = rms_norm(g, q, f"{key_of(scope)}.q_norm.weight", eps, f"{scope}/q_norm")
    q = g.op("Transpose", [q], f"{scope}/q_transpose", perm=[0, 2, 1, 3])  # (B, H, S, d)
    q = apply_rope(g, q, cos, sin, a.head_dim, f"{scope}/q_rope")

    raw_k = _heads(
        g,
        linear(g, x, f"{key_of(scope)}.k_proj.weight", f"{scope}/k_proj"),
        a.n_kv_heads,
        a.head_dim,
        f"{scope}/k_heads",
    )  # (B, S, kvh, d)
    value_source = (
        raw_k
        if a.k_eq_v
        else _heads(
            g,
            linear(g, x, f"{key_of(scope)}.v_proj.weight", f"{scope}/v_proj"),
            a.n_kv_heads,
            a.head_dim,
            f"{scope}/v_heads",
        )
    )
    if a.k_eq_v and not a.v_norm:
        raise UnsupportedArchitecture(f"layer {layer.index}: K=V without v_norm has no export")
    # Gemma 4: v_norm is a scale-free RMSNorm (transformers `Gemma4TextAttention.v_norm`).
    v_new = rms_norm(g, value_source, None, eps, f"{scope}/v_norm") if a.v_norm else value_source
    v_new = g.op("Transpose", [v_new], f"{scope}/v_transpose", perm=[0, 2, 1, 3])
    v_all = g.op("Concat", [past["value"], v_new], f"{scope}/v_concat", axis=2)  # (B,kvh,T,d)
    keys, mask = attention_mask(g, pos, past["value"], a.window, f"{scope}/mask")
    k_weight = f"{key_of(scope)}.k_norm.weight"
    if a.k_eq_v:
        # K = RoPE(k_norm(raw)) = RoPE(v_norm(raw) * k_norm.weight), over every cached token.
        k_cos, k_sin = rope_tables(g, keys, a.rope, a.head_dim, f"{scope}/k_rope_table")
        scaled = g.op("Mul", [v_all, g.weight(k_weight)], f"{scope}/k_norm/Scale")
        k_all = apply_rope(g, scaled, k_cos, k_sin, a.head_dim, f"{scope}/k_rope")
    else:
        k_new = rms_norm(g, raw_k, k_weight, eps, f"{scope}/k_norm") if a.qk_norm else raw_k
        k_new = g.op("Transpose", [k_new], f"{scope}/k_transpose", perm=[0, 2, 1, 3])
        k_new = apply_rope(g, k_new, cos, sin, a.head_dim, f"{scope}/k_rope")
        k_all = g.op("Concat", [past["key"], k_new], f"{scope}/k_concat", axis=2)

    repeat = g.ints(1, 1, a.n_heads // a.n_kv_heads, 1, 1)
    heads_shape = g.ints(0, a.n_heads, -1, a.head_dim)

    def expand(t: str, name: str) -> str:  # (B, kvh, T, d) -> (B, H, T, d), as repeat_kv
        grouped = g.op("Unsqueeze", [t, g.ints(2)], f"{scope}/{name}_unsqueeze")
        tiled = g.op("Expand", [grouped, repeat], f"{scope}/{name}_expand")
        return g.op("Reshape", [tiled, heads_shape], f"{scope}/{name}_repeat")

    k_t = g.op("Transpose", [expand(k_all, "k")], f"{scope}/k_t", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], f"{scope}/scores/MatMul")  # (B, H, S, T)
    if a.scale != 1.0:
        scores = g.op("Mul", [scores, g.scalar(a.scale)], f"{scope}/scores/Scale")
    scores = g.op("Add", [scores, mask], f"{scope}/scores/Mask")
    probs = g.op("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = g.op("MatMul", [probs, expand(v_all, "v")], f"{scope}/context/MatMul")
    context = g.op("Transpose", [context], f"{scope}/context/Transpose", perm=[0, 2, 1, 3])
    context = g.op("Reshape", [context, g.ints(0, 0, a.q_size)], f"{scope}/context/Reshape")
    out = linear(g, context, f"{key_of(scope)}.o_proj.weight", f"{scope}/o_proj")

    present = {"value": v_all} if a.k_eq_v else {"key": k_all, "value": v_all}
    if a.window is not None:  # keep the last `window` tokens
        present = {
            t: g.op(
                "Slice", [v, g.ints(-a.window), g.ints(2**62), g.ints(2)], f"{scope}/{t}_window"
            )
            for t, v in present.items()
        }
    return out, present


def key_of(scope: str) -> str:
    """Node scope `/model/layers.0/self_attn` -> checkpoint prefix `model.layers.0.self_attn`."""
    return scope.lstrip("/").replace("/", ".")


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


def sparse_experts(g: Graph, moe: MoeSpec, x: str, index: str, weights: str, scope: str) -> str:
    """sum_k weight_k * expert_k(x) for tokens x (N, H), computing only the selected experts:
    their weights are gathered per token, (N, k, H, 2I) and (N, k, I, H), then multiplied."""
    size = moe.expert_intermediate_size
    gate_up = g.weight(f"{key_of(scope)}.gate_up_proj", (0, 2, 1))  # (E, H, 2I)
    down = g.weight(f"{key_of(scope)}.down_proj", (0, 2, 1))  # (E, I, H)
    rows = g.op("Unsqueeze", [x, g.ints(1, 2)], f"{scope}/Unsqueeze")  # (N, 1, 1, H)
    chosen_gate_up = g.op("Gather", [gate_up, index], f"{scope}/gate_up_proj/Gather")
    both = g.op("MatMul", [rows, chosen_gate_up], f"{scope}/gate_up_proj/MatMul")  # (N,k,1,2I)
    gate = g.op("Slice", [both, g.ints(0), g.ints(size), g.ints(-1)], f"{scope}/gate")
    up = g.op("Slice", [both, g.ints(size), g.ints(2 * size), g.ints(-1)], f"{scope}/up")
    hidden = g.op(
        "Mul", [activation(g, gate, moe.activation, f"{scope}/act_fn"), up], f"{scope}/Mul"
    )
    chosen_down = g.op("Gather", [down, index], f"{scope}/down_proj/Gather")  # (N, k, I, H)
    out = g.op("MatMul", [hidden, chosen_down], f"{scope}/down_proj/MatMul")  # (N, k, 1, H)
    out = g.op("Squeeze", [out, g.ints(2)], f"{scope}/Squeeze")  # (N, k, H)
    column = g.op("Unsqueeze", [weights, g.ints(-1)], f"{scope}/WeightColumn")  # (N, k, 1)
    weighted = g.op("Mul", [out, column], f"{scope}/Weighted")
    return g.op("ReduceSum", [weighted, g.ints(1)], f"{scope}/ReduceSum", keepdims=0)
