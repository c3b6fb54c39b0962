"""Self-attention with an explicit KV cache: RoPE, masks, and two implementations.

- `GroupQueryAttention` (ONNX Runtime contrib op) for layers that cache K and V: it writes
  the new K/V after the held tokens, applies the causal mask and, for sliding layers, the
  window (`local_window_size`) without building a mask tensor. Its cache is a shared
  buffer (`length_slots`): past and present are one tensor of any capacity, the input
  `cache_lengths` says how many tokens at its start are held, and a runtime that binds
  the same memory as both writes only the new tokens instead of copying the past every
  call (`--kv-cache append` keeps the older contract: present = past + new). RoPE sits
  inside the op where nothing comes between it and attention (`fused_rope`); otherwise
  it, q/k norms and Llama 4's temperature are applied before the op.
- Standard ops where GQA does not fit: K=V layers (Gemma 4 full attention) cache only V
  and recompute K = RoPE(V * k_norm.weight) over the cache, which GQA cannot express, and
  Llama 4's chunked attention (a block-diagonal mask GQA does not offer). The mask there is
  built from absolute positions, so a trimmed cache stays exact; query heads are grouped
  by their KV head, so K and V are not copied per query head.

Sliding layers in standard ops return at most `window` cache tokens; the next step only
needs those. A sliding GQA layer's buffer holds what the runtime keeps (the op masks by
the window), so rollbacks need no copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from export.errors import UnsupportedArchitecture
from export.onnx_ops import MS, Graph, key_of, linear, norm_weight, rms_norm
from export.spec import AttentionSpec, LayerSpec, ModelSpec, RopeSpec
from subtitled.translate.contract import CACHE_LENGTHS, POSITION_IDS, past_name

_NEG = -1e30  # additive mask; a finite value keeps fully-masked padding rows NaN-free


@dataclass(frozen=True)
class Positions:
    """Shared position tensors: query positions (S,), their first value, the sequence
    length (scalars), the batch size (1,), and the (B, S) input."""

    query: str
    start: str
    length: str
    batch: str
    position_ids: str


def inv_freq(rope: RopeSpec, head_dim: int) -> np.ndarray:
    """RoPE inverse frequencies (rotating dims / 2,), as transformers' rope init functions;
    the proportional type spaces the rotating frequencies over the whole head_dim and gives
    the rest frequency 0 (`_compute_proportional_rope_parameters`); the linear type divides
    the default ones by its factor (`_compute_linear_scaling_rope_parameters`)."""
    if rope.rope_type in ("default", "llama3", "linear"):
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / head_dim
        freq = (1.0 / rope.theta**exponents).astype(np.float32)
        if rope.rope_type == "linear":
            return (freq / np.float32(rope.linear_factor)).astype(np.float32)
        if rope.llama3 is None:
            return freq
        # transformers `_compute_llama3_parameters`: long wavelengths slowed by `factor`,
        # a smooth blend between the low and high frequency bounds.
        factor, low, high, original = rope.llama3
        wavelen = 2 * np.pi / freq
        scaled = np.where(wavelen > original / low, freq / factor, freq)
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= original / high) & (wavelen <= original / low)
        return np.where(medium, blended, scaled).astype(np.float32)
    if rope.rope_type == "yarn" and rope.yarn is not None:
        return _yarn_inv_freq(rope, int(head_dim * rope.partial_rotary_factor))
    if rope.rope_type == "proportional":
        angles = int(rope.partial_rotary_factor * head_dim // 2)
        exponents = np.arange(0, 2 * angles, 2, dtype=np.float32) / head_dim
        rotating = 1.0 / rope.theta**exponents
        return np.concatenate([rotating, np.zeros(head_dim // 2 - angles)]).astype(np.float32)
    raise UnsupportedArchitecture(f"rope_type {rope.rope_type!r} has no ONNX export yet")


def _yarn_inv_freq(rope: RopeSpec, dim: int) -> np.ndarray:
    """transformers `_compute_yarn_parameters`: frequencies slowed by `factor` below the
    correction range, kept above it, blended linearly across it."""
    assert rope.yarn is not None
    factor, beta_fast, beta_slow, original, truncate = rope.yarn

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(rope.theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    positions = rope.theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # share of the unscaled (extrapolated) frequency
    freq: np.ndarray = (1 / (factor * positions)) * (1 - keep) + (1 / positions) * keep
    return freq.astype(np.float32)


def _angles(g: Graph, positions: str, rope: RopeSpec, head_dim: int, scope: str) -> str:
    """position * inv_freq: (*P, head_dim / 2) for positions of any shape P."""
    freq = g.const(f"{scope}/inv_freq", inv_freq(rope, head_dim))
    as_float = g.op("Cast", [positions], f"{scope}/Cast", to=TensorProto.FLOAT)
    column = g.op("Unsqueeze", [as_float, g.ints(-1)], f"{scope}/Unsqueeze")
    return g.op("Mul", [column, freq], f"{scope}/Angles")


def _cos_sin(g: Graph, angles: str, rope: RopeSpec, scope: str) -> tuple[str, str]:
    cos, sin = g.op("Cos", [angles], f"{scope}/Cos"), g.op("Sin", [angles], f"{scope}/Sin")
    if rope.attention_factor != 1.0:  # YaRN
        factor = g.scalar(rope.attention_factor)
        cos = g.op("Mul", [cos, factor], f"{scope}/CosScale")
        sin = g.op("Mul", [sin, factor], f"{scope}/SinScale")
    return cos, sin


def rope_tables(
    g: Graph, positions: str, rope: RopeSpec, head_dim: int, scope: str
) -> tuple[str, str]:
    """cos, sin of `positions` (any shape P) as (*P, head_dim) tensors; interleaved RoPE
    (Llama 4's complex form) repeats each frequency on adjacent pairs, else on halves."""
    angles = _angles(g, positions, rope, head_dim, scope)  # (*P, d/2)
    if rope.interleaved:
        pairs = g.op("Unsqueeze", [angles, g.ints(-1)], f"{scope}/Pairs")
        both = g.op("Concat", [pairs, pairs], f"{scope}/Concat", axis=-1)  # (*P, d/2, 2)
        shape = g.op("Shape", [angles], f"{scope}/Shape")
        both = g.op(
            "Reshape",
            [
                both,
                g.op(
                    "Concat",
                    [
                        g.op("Slice", [shape, g.ints(0), g.ints(-1)], f"{scope}/Lead"),
                        g.ints(head_dim),
                    ],
                    f"{scope}/FlatShape",
                    axis=0,
                ),
            ],
            f"{scope}/Flatten",
        )
    else:
        both = g.op("Concat", [angles, angles], f"{scope}/Concat", axis=-1)  # (*P, d)
    return _cos_sin(g, both, rope, scope)


@dataclass(frozen=True)
class Rope:
    """One RoPE kind of the model (its spec and rotating dims). Its tables are built on
    first use and shared by every layer of the kind."""

    spec: RopeSpec
    dim: int
    scope: str

    def tables(self, g: Graph) -> tuple[str, str]:
        """cos, sin (B, S, dim) of the query positions, for RoPE in standard ops."""
        cos, sin = g.once(
            f"{self.scope}/tables",
            lambda: rope_tables(g, POSITION_IDS, self.spec, self.dim, self.scope),
        )
        return cos, sin

    def gqa_inputs(self, g: Graph, pos: Positions, held: str, key: str) -> list[str]:
        """`GroupQueryAttention`'s cos_cache, sin_cache and position_ids for its built-in
        rotary: the table rows are the query tokens' own angles (S, dim / 2) and token i
        reads row i, whatever its position (a cache trimmed to a window needs no table of
        absolute positions); the op wants at least held + S rows (`held`: the tokens held
        by the layers of kind `key`), so zero rows pad the table (never read)."""
        scope = f"{self.scope}/gqa"
        rows = g.once(
            f"{scope}/cos",
            lambda: _cos_sin(
                g, _angles(g, pos.query, self.spec, self.dim, scope), self.spec, scope
            ),
        )

        def padded() -> tuple[str, ...]:
            pads = g.op("Concat", [g.ints(0, 0), held, g.ints(0)], f"{scope}/Pads{key}", axis=0)
            return tuple(
                g.op("Pad", [t, pads], f"{scope}/{name}Cache{key}")
                for t, name in zip(rows, ("Cos", "Sin"), strict=True)
            )

        return [
            *g.once(f"{scope}/{key}", padded),
            *g.once("gqa_token_rows", lambda: _token_rows(g, pos)),
        ]


def _token_rows(g: Graph, pos: Positions) -> tuple[str]:
    """0 .. S-1 for every batch row (B, S): token i reads row i of a per-call table."""
    zero, one = (g.const(f"/const/i64_{v}", np.array(v, np.int64)) for v in (0, 1))
    index = g.op("Range", [zero, pos.length, one], "/model/positions/Index")
    index = g.op("Unsqueeze", [index, g.ints(0)], "/model/positions/IndexRow")
    shape = g.op("Shape", [pos.position_ids], "/model/positions/PositionsShape")
    return (g.op("Expand", [index, shape], "/model/positions/IndexRows"),)


def apply_rope(
    g: Graph,
    x: str,
    cos: str,
    sin: str,
    head_dim: int,
    interleaved: bool,
    scope: str,
    many_rows: bool = False,
) -> str:
    """x * cos + rotate(x) * sin over the last axis: rotate_half (transformers
    `apply_rotary_pos_emb`), or on adjacent pairs (x0, x1) -> (-x1, x0) for Llama 4's
    complex multiplication (`apply_rotary_emb`). The rotation is one `MatMul` by a fixed
    signed permutation (exact: one non-zero term per output) instead of the slices, negation
    and concatenation it stands for (4 nodes a call instead of 7). That costs head_dim
    multiply-adds per value: `many_rows` (a K rebuilt over the whole cache each step) takes
    the slices instead, on rotate_half."""
    if many_rows and not interleaved:
        half = head_dim // 2
        first = g.op("Slice", [x, g.ints(0), g.ints(half), g.ints(-1)], f"{scope}/First")
        second = g.op("Slice", [x, g.ints(half), g.ints(head_dim), g.ints(-1)], f"{scope}/Second")
        rotated = g.op(
            "Concat", [g.op("Neg", [second], f"{scope}/Neg"), first], f"{scope}/Rotate", axis=-1
        )
        return g.op(
            "Add",
            [
                g.op("Mul", [x, cos], f"{scope}/MulCos"),
                g.op("Mul", [rotated, sin], f"{scope}/MulSin"),
            ],
            f"{scope}/Add",
        )
    rotation = np.zeros((head_dim, head_dim), np.float32)
    half = head_dim // 2
    for i in range(half):
        if interleaved:  # out[2i] = -x[2i + 1], out[2i + 1] = x[2i]
            rotation[2 * i + 1, 2 * i], rotation[2 * i, 2 * i + 1] = -1.0, 1.0
        else:  # out[i] = -x[i + half], out[i + half] = x[i]
            rotation[i + half, i], rotation[i, i + half] = -1.0, 1.0
    name = f"/const/rope_rotation_{'pairs' if interleaved else 'half'}_{head_dim}"
    rotated = g.op("MatMul", [x, g.const(name, rotation)], f"{scope}/Rotate")
    return g.op(
        "Add",
        [g.op("Mul", [x, cos], f"{scope}/MulCos"), g.op("Mul", [rotated, sin], f"{scope}/MulSin")],
        f"{scope}/Add",
    )


def _heads(g: Graph, x: str, heads: int, head_dim: int, scope: str) -> str:
    """(B, S, heads * d) -> (B, S, heads, d)."""
    return g.op("Reshape", [x, g.ints(0, 0, heads, head_dim)], f"{scope}/Reshape")


def attention_mask(
    g: Graph, pos: Positions, past: str, a: AttentionSpec, scope: str
) -> tuple[str, str]:
    """Key positions (T,) of past + new tokens, and the additive mask (S, T): causal; for
    sliding layers only keys with position > query - window (transformers' overlay); for
    chunked layers only keys in the query's chunk (Llama 4 `attention_chunk_size`)."""
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
    if a.window is not None:
        oldest = g.op(
            "Sub",
            [query_col, g.const(f"/const/i64_{a.window}", np.array(a.window, np.int64))],
            f"{scope}/Oldest",
        )
        recent = g.op("Greater", [keys, oldest], f"{scope}/InWindow")
        allowed = g.op("And", [allowed, recent], f"{scope}/Allowed")
    if a.chunk is not None:
        size = g.const(f"/const/i64_{a.chunk}", np.array(a.chunk, np.int64))
        same = g.op(
            "Equal",
            [
                g.op("Div", [keys, size], f"{scope}/KeyChunk"),
                g.op("Div", [query_col, size], f"{scope}/QueryChunk"),
            ],
            f"{scope}/SameChunk",
        )
        allowed = g.op("And", [allowed, same], f"{scope}/InChunk")
    mask = g.op("Where", [allowed, g.scalar(0.0), g.scalar(_NEG)], f"{scope}/Mask")
    return keys, mask


def _l2_norm(g: Graph, x: str, eps: float, scope: str) -> str:
    """Llama 4 `Llama4TextL2Norm`: x * rsqrt(mean(x^2) + eps), no weight."""
    return rms_norm(g, x, None, eps, scope)


def _temperature(g: Graph, q: str, pos: Positions, a: AttentionSpec, scope: str) -> str:
    """Llama 4 attention temperature tuning on NoPE layers: q *= log(floor((p + 1) /
    floor_scale) + 1) * attn_scale + 1 for query position p."""
    t = a.temperature
    if t is None:
        return q
    p = g.op("Cast", [pos.position_ids], f"{scope}/Cast", to=TensorProto.FLOAT)
    p = g.op("Add", [p, g.scalar(1.0)], f"{scope}/AddOne")
    p = g.op("Floor", [g.op("Div", [p, g.scalar(t.floor_scale)], f"{scope}/Div")], f"{scope}/Floor")
    logs = g.op("Log", [g.op("Add", [p, g.scalar(1.0)], f"{scope}/AddOne2")], f"{scope}/Log")
    scale = g.op(
        "Add",
        [g.op("Mul", [logs, g.scalar(t.scale)], f"{scope}/Mul"), g.scalar(1.0)],
        f"{scope}/Scale",
    )  # (B, S)
    scale = g.op("Unsqueeze", [scale, g.ints(-1, -2)], f"{scope}/Unsqueeze")  # (B, S, 1, 1)
    return g.op("Mul", [q, scale], f"{scope}/Apply")


def attention(
    g: Graph,
    spec: ModelSpec,
    layer: LayerSpec,
    x: str,
    pos: Positions,
    rope: Rope | None,
    scope: str,
) -> tuple[str, dict[str, str]]:
    """Self-attention of one layer on x (B, S, H); returns its output (B, S, H) and the
    present cache by tensor. `rope` is None on NoPE layers. Where nothing sits between
    RoPE and attention, `GroupQueryAttention` applies it (`fused_rope`)."""
    a: AttentionSpec = layer.attention
    in_gqa = rope is not None and fused_rope(a)
    eps = spec.rms_norm_eps
    prefix = key_of(scope)
    q = _heads(
        g,
        linear(g, x, f"{prefix}.q_proj.weight", f"{scope}/q_proj"),
        a.n_heads,
        a.head_dim,
        f"{scope}/q_heads",
    )  # (B, S, H, d)
    raw_k = _heads(
        g,
        linear(g, x, f"{prefix}.k_proj.weight", f"{scope}/k_proj"),
        a.n_kv_heads,
        a.head_dim,
        f"{scope}/k_heads",
    )  # (B, S, kvh, d)
    if a.qk_norm == "rms":
        q = rms_norm(g, q, f"{prefix}.q_norm.weight", eps, f"{scope}/q_norm", spec.norm_offset)
    cos = sin = ""
    if rope is not None and not in_gqa:
        tables = rope.tables(g)
        cos = g.op("Unsqueeze", [tables[0], g.ints(2)], f"{scope}/cos")  # (B, S, 1, d)
        sin = g.op("Unsqueeze", [tables[1], g.ints(2)], f"{scope}/sin")
        q = apply_rope(g, q, cos, sin, a.head_dim, a.rope.interleaved, f"{scope}/q_rope")
    if a.qk_norm == "l2":  # Llama 4 normalises after RoPE
        q = _l2_norm(g, q, spec.rms_norm_eps, f"{scope}/q_norm")
    q = _temperature(g, q, pos, a, f"{scope}/temperature")

    shared = g.precision.shared_cache
    if a.k_eq_v:  # Gemma 4 full layers: V = v_norm(k_proj(x)), K = RoPE(k_norm(k_proj(x)))
        if not a.v_norm:
            raise UnsupportedArchitecture(f"layer {layer.index}: K=V without v_norm has no export")
        v = rms_norm(g, raw_k, None, eps, f"{scope}/v_norm")
        k = None  # appended cache: K is rebuilt from the cached V (`_standard`)
        if runs_in_gqa(a, shared):  # shared buffers: K is cached too, made here for the new tokens
            k = rms_norm(
                g, raw_k, f"{prefix}.k_norm.weight", eps, f"{scope}/k_norm", spec.norm_offset
            )
            if cos:
                k = apply_rope(g, k, cos, sin, a.head_dim, a.rope.interleaved, f"{scope}/k_rope")
    else:
        k = raw_k
        if a.qk_norm == "rms":
            k = rms_norm(g, k, f"{prefix}.k_norm.weight", eps, f"{scope}/k_norm", spec.norm_offset)
        if cos:
            k = apply_rope(g, k, cos, sin, a.head_dim, a.rope.interleaved, f"{scope}/k_rope")
        if a.qk_norm == "l2":
            k = _l2_norm(g, k, spec.rms_norm_eps, f"{scope}/k_norm")
        v = _heads(
            g,
            linear(g, x, f"{prefix}.v_proj.weight", f"{scope}/v_proj"),
            a.n_kv_heads,
            a.head_dim,
            f"{scope}/v_heads",
        )
        if a.v_norm:  # Gemma 4: a scale-free RMSNorm (`Gemma4TextAttention.v_norm`)
            v = rms_norm(g, v, None, eps, f"{scope}/v_norm")
    slot = None
    if k is None or not runs_in_gqa(a, shared):
        context, present = _standard(g, layer, q, k, v, pos, scope, spec.norm_offset)
    else:
        slot = length_slots(spec, shared).get(layer.index)
        context, present = _fused(g, layer, q, k, v, pos, rope if in_gqa else None, slot, scope)
    out = linear(g, context, f"{prefix}.o_proj.weight", f"{scope}/o_proj")
    return out, present if slot is not None else _trim(g, a, present, scope)


def runs_in_gqa(a: AttentionSpec, shared: bool = True) -> bool:
    """Whether the layer runs in `GroupQueryAttention`: not MLA, not chunked (a block
    mask), and not K=V unless K is cached beside V (`AttentionSpec.cached`: shared
    buffers; an appended cache rebuilds K from V in standard ops)."""
    return a.mla is None and a.chunk is None and (not a.k_eq_v or shared)


def length_slots(spec: ModelSpec, shared: bool = True) -> dict[int, int]:
    """Layer index -> its entry in the `cache_lengths` input, for every shared-buffer layer
    (the GQA layers; none unless `shared`). Layers with one window (or full attention)
    share an entry: a runtime keeps their buffers in step, so one held length serves them
    all."""
    windows: dict[int | None, int] = {}
    return {
        layer.index: windows.setdefault(layer.attention.window, len(windows))
        for layer in spec.layers
        if shared and runs_in_gqa(layer.attention, shared)
    }


def fused_rope(a: AttentionSpec) -> bool:
    """Whether `GroupQueryAttention` applies this layer's RoPE: a GQA layer with nothing
    between RoPE and attention (not Llama 4's L2 norm or temperature, which follow RoPE),
    rotating halves (Llama 4's pairs always come with chunked attention or an L2 norm, so
    the op's interleaved mode would go untested) and half a head a multiple of 8 (the
    op's rule for its cos/sin tables)."""
    return (
        a.mla is None
        and not a.nope
        and not a.k_eq_v
        and a.chunk is None
        and a.qk_norm != "l2"
        and a.temperature is None
        and not a.rope.interleaved
        and a.head_dim % 16 == 0
    )


def _fused(
    g: Graph,
    layer: LayerSpec,
    q: str,
    k: str,
    v: str,
    pos: Positions,
    rope: Rope | None,
    slot: int | None,
    scope: str,
) -> tuple[str, dict[str, str]]:
    """`GroupQueryAttention` on q (B, S, H, d), k and v (B, S, kvh, d), applying `rope`
    when given: context (B, S, H * d) and the present K/V buffers (B, kvh, capacity, d)
    with the new tokens written after the `cache_lengths[slot]` held ones (capacity: the
    past buffer's, or held + S if that is larger). With no slot (`--kv-cache append`) the
    past is exactly the held tokens and the present (B, kvh, past + S, d)."""
    a = layer.attention

    def flat(t: str, size: int, name: str) -> str:  # (B, S, heads, d) -> (B, S, heads * d)
        return g.op("Reshape", [t, g.ints(0, 0, size)], f"{scope}/{name}_flat")

    past_k = past_name(layer.index, "key")
    key = f"{slot}" if slot is not None else f"append{a.window or ''}"
    seqlens, total, held = _lengths(g, slot, past_k, key, pos, scope)
    rotary = [] if rope is None else rope.gqa_inputs(g, pos, held, key)
    context, k_all, v_all = g.ops(
        "GroupQueryAttention",
        [
            flat(q, a.q_size, "q"),
            flat(k, a.kv_size, "k"),
            flat(v, a.kv_size, "v"),
            past_k,
            past_name(layer.index, "value"),
            seqlens,
            total,
            *rotary,
        ],
        f"{scope}/GroupQueryAttention",
        3,
        domain=MS,
        num_heads=a.n_heads,
        kv_num_heads=a.n_kv_heads,
        scale=a.scale,
        local_window_size=-1 if a.window is None else a.window,
        **({"do_rotary": 1} if rotary else {}),
    )
    return context, {"key": k_all, "value": v_all}


def _lengths(
    g: Graph, slot: int | None, past_k: str, key: str, pos: Positions, scope: str
) -> tuple[str, str, str]:
    """`GroupQueryAttention`'s seqlens_k (B,) int32 (index of each row's last token) and
    total_sequence_length (scalar int32), and the held length (1,) int64: entry `slot` of
    `cache_lengths`, or with no slot the length of the past `past_k`. Built at the first
    layer of the kind (`key`: the slot, or an append window) and shared by the others (7
    nodes fewer per layer)."""

    def build() -> tuple[str, str, str]:
        if slot is not None:
            held = g.op("Gather", [CACHE_LENGTHS, g.ints(slot)], f"{scope}/HeldLength")  # (1,)
        else:
            shape = g.op("Shape", [past_k], f"{scope}/PastShape")
            held = g.op("Gather", [shape, g.ints(2)], f"{scope}/PastLength")
        total = g.op(
            "Cast",
            [g.op("Add", [held, pos.length], f"{scope}/Total")],
            f"{scope}/Total32",
            to=TensorProto.INT32,
        )
        last = g.op(
            "Sub", [total, g.const("/const/one_i32", np.array(1, np.int32))], f"{scope}/Last"
        )
        seqlens = g.op("Expand", [last, pos.batch], f"{scope}/SeqLens")
        total = g.op("Squeeze", [total, g.ints(0)], f"{scope}/TotalScalar")
        return seqlens, total, held

    seqlens, total, held = g.once(f"gqa_lengths/{key}", build)
    return seqlens, total, held


def _trim(g: Graph, a: AttentionSpec, present: dict[str, str], scope: str) -> dict[str, str]:
    if a.window is None:
        return present
    return {  # keep the last `window` tokens
        t: g.op("Slice", [v, g.ints(-a.window), g.ints(2**62), g.ints(2)], f"{scope}/{t}_window")
        for t, v in present.items()
    }


def _standard(
    g: Graph,
    layer: LayerSpec,
    q: str,
    k: str | None,
    v: str,
    pos: Positions,
    scope: str,
    norm_offset: float,
) -> tuple[str, dict[str, str]]:
    """Attention in standard ops on q (B, S, H, d), k (None for K=V) and v (B, S, kvh, d):
    context (B, S, H * d) and the present cache (`norm_offset`: the model's, for the k_norm
    scale a K=V layer applies itself)."""
    a = layer.attention
    past = {t: past_name(layer.index, t) for t in a.cache_tensors}
    q = g.op("Transpose", [q], f"{scope}/q_transpose", perm=[0, 2, 1, 3])  # (B, H, S, d)
    v_new = g.op("Transpose", [v], f"{scope}/v_transpose", perm=[0, 2, 1, 3])
    v_all = g.op("Concat", [past["value"], v_new], f"{scope}/v_concat", axis=2)  # (B,kvh,T,d)
    keys, mask = attention_mask(g, pos, past["value"], a, f"{scope}/mask")
    if k is None:
        # K = RoPE(k_norm(raw)) = RoPE(v_norm(raw) * k_norm.weight), over every cached token.
        k_cos, k_sin = rope_tables(g, keys, a.rope, a.head_dim, f"{scope}/k_rope_table")
        weight = norm_weight(g, f"{key_of(scope)}.k_norm.weight", norm_offset, f"{scope}/k_norm")
        scaled = g.op("Mul", [v_all, weight], f"{scope}/k_norm/Scale")
        k_all = apply_rope(
            g, scaled, k_cos, k_sin, a.head_dim, a.rope.interleaved, f"{scope}/k_rope", True
        )
        present = {"value": v_all}
    else:
        k_new = g.op("Transpose", [k], f"{scope}/k_transpose", perm=[0, 2, 1, 3])
        k_all = g.op("Concat", [past["key"], k_new], f"{scope}/k_concat", axis=2)
        present = {"key": k_all, "value": v_all}
    return _scores(g, a, q, k_all, v_all, mask, scope), present


def _scores(
    g: Graph, a: AttentionSpec, q: str, k_all: str, v_all: str, mask: str, scope: str
) -> str:
    """softmax(q k^T * scale + mask) v for q (B, H, S, d), k and v (B, kvh, T, d) ->
    context (B, S, H * d). The query heads are grouped by the KV head they read, (B, kvh,
    G * S, d) with head h reading KV head h // G as repeat_kv, so K and V are used as
    cached instead of being copied for every query head."""
    group = a.n_heads // a.n_kv_heads
    if group > 1:
        q = g.op("Reshape", [q, g.ints(0, a.n_kv_heads, -1, a.head_dim)], f"{scope}/q_group")
        mask = g.op("Tile", [mask, g.ints(group, 1)], f"{scope}/mask_group")  # (G * S, T)
    k_t = g.op("Transpose", [k_all], f"{scope}/k_t", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], f"{scope}/scores/MatMul")  # (B, kvh, G * S, T)
    if a.scale != 1.0:
        scores = g.op("Mul", [scores, g.scalar(a.scale)], f"{scope}/scores/Scale")
    scores = g.op("Add", [scores, mask], f"{scope}/scores/Mask")
    probs = g.op("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = g.op("MatMul", [probs, v_all], f"{scope}/context/MatMul")  # (B, kvh, G * S, d)
    if group > 1:
        context = g.op(
            "Reshape", [context, g.ints(0, a.n_heads, -1, a.head_dim)], f"{scope}/context/Heads"
        )
    context = g.op("Transpose", [context], f"{scope}/context/Transpose", perm=[0, 2, 1, 3])
    return g.op("Reshape", [context, g.ints(0, 0, a.q_size)], f"{scope}/context/Reshape")
