"""ONNX Runtime's fused `QMoE` (com.microsoft) for quantised SwiGLU experts.

Where the experts are SiLU-gated (SwiGLU) and routed by a softmax whose top-k weights are
renormalised (Qwen3-MoE with `norm_topk_prob`, Mixtral), one `QMoE` node does the routing
and the selected experts' two matrix products straight from the quantised tables: no
gathered copy of the weights and no per-block products (2 CPU threads: see `python -m
export bench`). Everything else (Gemma 4's GELU-gated experts with their own router, Llama
4's input-scaled experts, DeepSeek-V3's grouped sigmoid routing, float precisions) takes
the sparse path of `export.onnx_ops.sparse_experts`, since the CPU kernel computes only
interleaved SwiGLU, softmax top-k routing.

Layout the CPU kernel reads (checked against a numpy reference in the tests):
- fc1 (E, 2I, H): the gate and up rows interleaved (row 2j gate j, row 2j+1 up j);
  fc2 (E, H, I).
- codes uint8 with the implicit zero point 2^(bits-1), two 4-bit codes per byte along
  the input axis, the first in the low nibble (as `export.quantize`).
- int8: one scale per output row, (E, rows); int4: one per block of 32 (or 16) inputs,
  (E, rows, inputs / block), with the `block_size` attribute.
"""

from __future__ import annotations

import numpy as np

from export.onnx_ops import MS, Graph, key_of
from export.quantize import quantize
from export.spec import MoeSpec


def qmoe_fits(g: Graph, moe: MoeSpec, hidden_size: int) -> bool:
    """Whether the fused kernel computes exactly this block at this precision."""
    bits = g.precision.weight_bits
    return (
        g.precision.fused_moe
        and bits in (4, 8)
        and moe.activation == "silu"
        and moe.scoring == "softmax"
        and moe.normalize_top_k
        and not moe.weights_on_input
        and moe.correction_bias_key is None
        and moe.groups == 1
        and moe.scaling == 1.0
        and (
            bits == 8
            or (
                g.block_for(hidden_size) is not None
                and g.block_for(moe.expert_intermediate_size) is not None
            )
        )
    )


def _table(g: Graph, key: str, value: np.ndarray, bits: int) -> tuple[str, str, int]:
    """Codes and scales of an (E, rows, inputs) table; returns their names and the block
    (0: one scale per row)."""
    columns = value.shape[-1]
    block = g.block_for(columns) if bits == 4 else None
    q = quantize(value, bits, block or columns)
    scales = q.scales if block else q.scales[..., 0]
    codes = g.initializer(f"{key}_qmoe", np.ascontiguousarray(q.codes))
    scale_name = g.initializer(f"{key}_qmoe_scales", np.ascontiguousarray(scales))
    return codes, scale_name, block or 0


def fused_experts(g: Graph, moe: MoeSpec, x: str, logits: str, scope: str) -> str:
    """The routed experts of tokens x (N, H) with router logits (N, E): (N, H)."""
    bits = g.precision.weight_bits
    assert bits is not None  # qmoe_fits
    key, size = key_of(scope), moe.expert_intermediate_size
    gate_up = g.load(f"{key}.gate_up_proj")
    down = g.load(f"{key}.down_proj")
    if moe.experts_in_out:
        gate_up, down = gate_up.transpose(0, 2, 1), down.transpose(0, 2, 1)
    interleaved = np.empty_like(gate_up)
    interleaved[:, 0::2] = gate_up[:, :size]
    interleaved[:, 1::2] = gate_up[:, size:]
    fc1, fc1_scales, block = _table(g, f"{key}.gate_up_proj", interleaved, bits)
    fc2, fc2_scales, _ = _table(g, f"{key}.down_proj", np.ascontiguousarray(down), bits)
    attrs = {"block_size": block} if block else {}
    return g.op(
        "QMoE",
        [x, logits, fc1, fc1_scales, "", fc2, fc2_scales],
        f"{scope}/QMoE",
        domain=MS,
        k=moe.top_k,
        activation_type="swiglu",
        swiglu_fusion=1,
        normalize_routing_weights=1,
        expert_weight_bits=bits,
        **attrs,
    )
