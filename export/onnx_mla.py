"""DeepSeek multi-head latent attention (MLA, `DeepseekV3Attention`) with an explicit cache.

The cache keeps what transformers' cache keeps: the normed latent (`kv_a_layernorm` of the
first `kv_lora_rank` outputs of `kv_a_proj_with_mqa`) and the roped shared key, here as one
tensor `past_key_values.{i}.value` (B, 1, T, kv_lora_rank + rope_dim), so the runtime's
one-tensor (K=V) layout covers it. It is (kv_lora_rank + rope_dim) / (2 * heads *
head_dim) of a full K/V cache (576 vs 32,768 floats per token and layer for DeepSeek-V3).
Each step expands K and V from the whole latent with `kv_b_proj`, as transformers'
`expand_kv` does; standard ops, since `GroupQueryAttention` takes neither the latent nor
K and V of different head sizes.
"""

from __future__ import annotations

from export.errors import UnsupportedArchitecture
from export.onnx_attention import Positions, Rope, apply_rope, attention_mask
from export.onnx_ops import Graph, key_of, linear, rms_norm
from export.spec import LayerSpec, ModelSpec
from subtitled.translate.contract import past_name


def mla_attention(
    g: Graph,
    spec: ModelSpec,
    layer: LayerSpec,
    x: str,
    pos: Positions,
    rope: Rope | None,
    scope: str,
) -> tuple[str, dict[str, str]]:
    """MLA on x (B, S, hidden); returns the output (B, S, hidden) and the present cache."""
    a = layer.attention
    m = a.mla
    if m is None or rope is None:
        raise UnsupportedArchitecture(f"layer {layer.index}: MLA needs its latent and RoPE specs")
    prefix, heads = key_of(scope), a.n_heads
    interleaved = a.rope.interleaved
    if m.q_lora_rank is None:
        q = linear(g, x, f"{prefix}.q_proj.weight", f"{scope}/q_proj")
    else:
        q = linear(g, x, f"{prefix}.q_a_proj.weight", f"{scope}/q_a_proj")
        q = rms_norm(g, q, f"{prefix}.q_a_layernorm.weight", m.norm_eps, f"{scope}/q_a_layernorm")
        q = linear(g, q, f"{prefix}.q_b_proj.weight", f"{scope}/q_b_proj")
    q = g.op("Reshape", [q, g.ints(0, 0, heads, m.qk_head_dim)], f"{scope}/q_heads")  # B,S,H,qk
    tables = rope.tables(g)
    cos = g.op("Unsqueeze", [tables[0], g.ints(2)], f"{scope}/cos")  # (B, S, 1, rope_dim)
    sin = g.op("Unsqueeze", [tables[1], g.ints(2)], f"{scope}/sin")
    q_pass = g.op("Slice", [q, g.ints(0), g.ints(m.nope_dim), g.ints(-1)], f"{scope}/q_pass")
    q_rot = g.op(
        "Slice", [q, g.ints(m.nope_dim), g.ints(m.qk_head_dim), g.ints(-1)], f"{scope}/q_rot"
    )
    q_rot = apply_rope(g, q_rot, cos, sin, m.rope_dim, interleaved, f"{scope}/q_rope")
    q = g.op("Concat", [q_pass, q_rot], f"{scope}/q_concat", axis=-1)
    q = g.op("Transpose", [q], f"{scope}/q_transpose", perm=[0, 2, 1, 3])  # (B, H, S, qk)

    compressed = linear(
        g, x, f"{prefix}.kv_a_proj_with_mqa.weight", f"{scope}/kv_a_proj_with_mqa"
    )  # (B, S, kv_lora + rope)
    width = m.kv_lora_rank + m.rope_dim
    latent = g.op(
        "Slice", [compressed, g.ints(0), g.ints(m.kv_lora_rank), g.ints(-1)], f"{scope}/latent"
    )
    latent = rms_norm(
        g, latent, f"{prefix}.kv_a_layernorm.weight", m.norm_eps, f"{scope}/kv_a_layernorm"
    )
    k_rot = g.op(
        "Slice", [compressed, g.ints(m.kv_lora_rank), g.ints(width), g.ints(-1)], f"{scope}/k_rot"
    )
    k_rot = g.op("Unsqueeze", [k_rot, g.ints(2)], f"{scope}/k_rot_head")  # (B, S, 1, rope)
    k_rot = apply_rope(g, k_rot, cos, sin, m.rope_dim, interleaved, f"{scope}/k_rope")
    k_rot = g.op("Squeeze", [k_rot, g.ints(2)], f"{scope}/k_rot_flat")
    new = g.op("Concat", [latent, k_rot], f"{scope}/cache_concat", axis=-1)  # (B, S, width)
    new = g.op("Unsqueeze", [new, g.ints(1)], f"{scope}/cache_head")  # (B, 1, S, width)
    past = past_name(layer.index, "value")
    cache = g.op("Concat", [past, new], f"{scope}/cache_all", axis=2)  # (B, 1, T, width)
    _, mask = attention_mask(g, pos, past, a, f"{scope}/mask")

    latent_all = g.op(
        "Slice", [cache, g.ints(0), g.ints(m.kv_lora_rank), g.ints(-1)], f"{scope}/latent_all"
    )
    latent_all = g.op("Squeeze", [latent_all, g.ints(1)], f"{scope}/latent_flat")  # (B, T, r)
    kv = linear(g, latent_all, f"{prefix}.kv_b_proj.weight", f"{scope}/kv_b_proj")
    kv = g.op("Reshape", [kv, g.ints(0, 0, heads, m.nope_dim + m.v_head_dim)], f"{scope}/kv_heads")
    kv = g.op("Transpose", [kv], f"{scope}/kv_transpose", perm=[0, 2, 1, 3])  # (B,H,T,nope+v)
    k_nope = g.op("Slice", [kv, g.ints(0), g.ints(m.nope_dim), g.ints(-1)], f"{scope}/k_nope")
    v = g.op(
        "Slice",
        [kv, g.ints(m.nope_dim), g.ints(m.nope_dim + m.v_head_dim), g.ints(-1)],
        f"{scope}/v",
    )
    k_rot_all = g.op(
        "Slice", [cache, g.ints(m.kv_lora_rank), g.ints(width), g.ints(-1)], f"{scope}/k_rot_all"
    )
    k_rot_all = g.op(
        "Expand", [k_rot_all, g.ints(1, heads, 1, 1)], f"{scope}/k_rot_heads"
    )  # (B, H, T, rope)
    k = g.op("Concat", [k_nope, k_rot_all], f"{scope}/k_concat", axis=-1)  # (B, H, T, qk)
    k_t = g.op("Transpose", [k], f"{scope}/k_t", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, k_t], f"{scope}/scores/MatMul")  # (B, H, S, T)
    scores = g.op("Mul", [scores, g.scalar(a.scale)], f"{scope}/scores/Scale")
    scores = g.op("Add", [scores, mask], f"{scope}/scores/Mask")
    probs = g.op("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = g.op("MatMul", [probs, v], f"{scope}/context/MatMul")  # (B, H, S, v)
    context = g.op("Transpose", [context], f"{scope}/context/Transpose", perm=[0, 2, 1, 3])
    context = g.op(
        "Reshape", [context, g.ints(0, 0, heads * m.v_head_dim)], f"{scope}/context/Reshape"
    )
    return linear(g, context, f"{prefix}.o_proj.weight", f"{scope}/o_proj"), {"value": cache}
