"""The checkpoint tensors a spec implies: every key with its shape.

The ONNX builder checks each tensor it reads against this map, so a checkpoint that does
not match its config fails with the key, the expected and the actual shape.
"""

from __future__ import annotations

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
