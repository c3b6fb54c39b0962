"""Size plan of an export, from the spec alone (no weights): bytes per part, KV cache, memory.

Storage model (what the ONNX export writes, so what a runtime loads):
- 2-D weights used as `x @ W.T` (attention and MLP projections, experts, embeddings, an
  untied LM head) are stored at the precision: fp32/fp16 as floats; int8/int4 block-wise
  along the input dimension, blocks of 32, one fp16 scale per block, symmetric so no zero
  points (ONNX Runtime `MatMulNBits` layout: N x ceil(K/32) blocks of 32*bits/8 bytes).
- Embeddings are quantised like the other matrices: Gemma 4's vocabulary is 262,144 rows,
  738M parameters (1.48 GB at fp16, 0.42 GB at int4). A tied LM head shares the one table
  (`GatherBlockQuantized` for the lookup, `MatMulNBits` for the head, same layout), so it
  adds no bytes. int4 embeddings cost some accuracy; `verify` measures it.
- The router matrix and every 1-D weight (norms, scales) stay floats (fp32 at fp32,
  fp16 otherwise): they are under 0.1% of the bytes and routing is sensitive to them.
- The KV cache is fp32 at fp32 and fp16 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from export.spec import AttentionSpec, LayerSpec, ModelSpec


@dataclass(frozen=True)
class Precision:
    """How weights are stored: floats of `float_bytes`, or `weight_bits`-bit blocks."""

    name: str
    float_bytes: int
    weight_bits: int | None = None
    block_size: int = 32
    scale_bytes: int = 2
    fused_moe: bool = True
    """Quantised SwiGLU experts with softmax routing go to ONNX Runtime's `QMoE` (see
    `export.onnx_qmoe`); False keeps them on the sparse gather path (`--moe-kernel sparse`)."""
    native_moe: bool = False
    """Quantised experts go to subtitled's own `SparseExperts` kernel (`export.onnx_native`,
    `--moe-kernel native`): every family whose experts it computes, before `QMoE`."""
    shared_cache: bool = True
    """GroupQueryAttention layers keep their cache in one past/present buffer with held
    lengths in `cache_lengths` (`export.onnx_attention`); False (`--kv-cache append`): the
    past is exactly the held tokens and the present returns them plus the new ones."""

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes of a (rows, cols) weight applied as x @ W.T, quantised along cols."""
        if self.weight_bits is None:
            return rows * cols * self.float_bytes
        blocks = math.ceil(cols / self.block_size)
        return rows * blocks * (self.block_size * self.weight_bits // 8 + self.scale_bytes)

    def describe(self) -> str:
        if self.weight_bits is None:
            return f"{self.name}: all weights and the KV cache as {8 * self.float_bytes}-bit floats"
        return (
            f"{self.name}: matrices and embeddings {self.weight_bits}-bit block-wise "
            f"(blocks of {self.block_size}, one fp16 scale per block, symmetric); "
            f"router, norms and KV cache fp{8 * self.float_bytes}"
        )


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", float_bytes=4),
    "fp16": Precision("fp16", float_bytes=2),
    "int8": Precision("int8", float_bytes=2, weight_bits=8),
    "int4": Precision("int4", float_bytes=2, weight_bits=4),
}

CONTEXTS = (4_096, 32_768, 262_144)


@dataclass(frozen=True)
class Part:
    """One part of the model's weights."""

    name: str
    params: int
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class KvGroup:
    """Layers with the same KV-cache geometry."""

    kind: str
    layers: int
    tensors: int
    n_kv_heads: int
    head_dim: int
    window: int | None

    def bytes_at(self, tokens: int, float_bytes: int) -> int:
        kept = tokens if self.window is None else min(tokens, self.window)
        return self.layers * self.tensors * self.n_kv_heads * self.head_dim * float_bytes * kept


@dataclass(frozen=True)
class Plan:
    """Everything `python -m export plan` prints."""

    spec: ModelSpec
    precision: Precision
    parts: tuple[Part, ...]
    active_params: int
    active_params_without_embeddings: int
    kv_groups: tuple[KvGroup, ...]
    workspace_bytes: int

    @property
    def total_params(self) -> int:
        return sum(part.params for part in self.parts)

    @property
    def total_bytes(self) -> int:
        return sum(part.bytes for part in self.parts)

    def kv_bytes(self, tokens: int) -> int:
        """KV-cache bytes holding `tokens` tokens (sliding layers keep at most their window)."""
        return sum(g.bytes_at(tokens, self.precision.float_bytes) for g in self.kv_groups)

    def memory_bytes(self, tokens: int) -> int:
        """Weights + KV cache at `tokens` + decode workspace (runtime arenas not included)."""
        return self.total_bytes + self.kv_bytes(tokens) + self.workspace_bytes


def _attention_params(attention: AttentionSpec, hidden: int) -> list[tuple[int, int]]:
    """(rows, cols) of every attention projection (q, k, [v], o; or MLA's)."""
    return list(attention.projections(hidden).values())


def _mlp_shapes(intermediate: int, hidden: int) -> list[tuple[int, int]]:
    """(rows, cols) of gate, up and down of a gated MLP (or of one expert)."""
    return [(intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]


def _sum_matrices(shapes: list[tuple[int, int]], precision: Precision) -> tuple[int, int]:
    params = sum(rows * cols for rows, cols in shapes)
    return params, sum(precision.matrix_bytes(rows, cols) for rows, cols in shapes)


def _expert_size(layer: LayerSpec, hidden: int, precision: Precision) -> tuple[int, int]:
    """(params, bytes) of one expert of the layer; (0, 0) for a dense layer."""
    if layer.moe is None:
        return 0, 0
    return _sum_matrices(_mlp_shapes(layer.moe.expert_intermediate_size, hidden), precision)


def weight_parts(spec: ModelSpec, precision: Precision) -> tuple[Part, ...]:
    """Parameters and bytes of each part of the model at `precision`."""
    hidden = spec.hidden_size
    embed_params = spec.vocab_size * hidden
    embed_bytes = precision.matrix_bytes(spec.vocab_size, hidden)
    sizes: dict[str, tuple[int, int]] = {}  # part -> (params, bytes)

    def add(part: str, params: int, size: int) -> None:
        old_params, old_size = sizes.get(part, (0, 0))
        sizes[part] = (old_params + params, old_size + size)

    vectors = sum(v.width for v in spec.vectors)
    for layer in spec.layers:
        add("attention", *_sum_matrices(_attention_params(layer.attention, hidden), precision))
        if layer.mlp is not None:
            shapes = _mlp_shapes(layer.mlp.intermediate_size, hidden)
            add("dense mlp", *_sum_matrices(shapes, precision))
        if layer.moe is not None:
            params, size = _expert_size(layer, hidden, precision)
            experts = layer.moe.num_experts
            add("experts", experts * params, experts * size)
            add("router", experts * hidden, experts * hidden * precision.float_bytes)
            if layer.moe.shared is not None:  # always active, like a dense MLP
                shapes = _mlp_shapes(layer.moe.shared.intermediate_size, hidden)
                add("dense mlp", *_sum_matrices(shapes, precision))
            if layer.moe.correction_bias_key is not None:
                vectors += experts
        vectors += sum(v.width for v in layer.vectors)
    if spec.tie_word_embeddings:
        head = Part("lm head", 0, 0, "tied: shares the embedding table")
    else:
        head = Part("lm head", embed_params, embed_bytes, "untied")
    return (
        Part("embeddings", embed_params, embed_bytes),
        *(
            Part(name, *sizes.get(name, (0, 0)))
            for name in ("attention", "dense mlp", "experts", "router")
        ),
        Part("norms", vectors, vectors * precision.float_bytes, "and other 1-D weights"),
        head,
    )


def kv_groups(spec: ModelSpec, shared: bool = True) -> tuple[KvGroup, ...]:
    """Layers grouped by KV-cache geometry, in order of first appearance (`shared`: the
    export's `--kv-cache shared`, where K=V layers cache K too)."""
    counts: dict[tuple[str, int, int, int, int | None], int] = {}
    for layer in spec.layers:
        a = layer.attention
        kind = "mla" if a.mla is not None else a.kind
        key = (kind, len(a.cached(shared)), a.n_kv_heads, a.head_dim, a.window)
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        KvGroup(kind, n, tensors, heads, head_dim, window)
        for (kind, tensors, heads, head_dim, window), n in counts.items()
    )


def make_plan(spec: ModelSpec, precision: Precision) -> Plan:
    """The size plan of `spec` stored at `precision`."""
    parts = weight_parts(spec, precision)
    idle_expert_params = 0
    gathered_bytes = 0
    for layer in spec.layers:
        if layer.moe is not None:
            params, size = _expert_size(layer, spec.hidden_size, precision)
            idle_expert_params += (layer.moe.num_experts - layer.moe.top_k) * params
            # The sparse MoE gathers the top-k experts' weights of one layer at a time.
            gathered_bytes = max(gathered_bytes, layer.moe.top_k * size)
    total = sum(part.params for part in parts)
    active = total - idle_expert_params
    embeddings = spec.vocab_size * spec.hidden_size
    tables = 1 if spec.tie_word_embeddings else 2
    return Plan(
        spec=spec,
        precision=precision,
        parts=parts,
        active_params=active,
        # Without the embedding table and LM head (one row is gathered; the head is a matmul).
        active_params_without_embeddings=active - embeddings * tables,
        kv_groups=kv_groups(spec, precision.shared_cache),
        # Decode workspace: fp32 logits over the vocabulary + one layer's gathered experts.
        workspace_bytes=spec.vocab_size * 4 + gathered_bytes,
    )


def _gb(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.3f} GB"


def format_plan(plan: Plan) -> str:
    """The plan as the text `python -m export plan` prints (GB = 10^9 bytes)."""
    spec = plan.spec
    kinds = [layer.attention.kind for layer in spec.layers]
    lines = [
        f"model: {spec.model_type}, {spec.num_layers} layers "
        f"({kinds.count('sliding')} sliding, {kinds.count('full')} full), "
        f"hidden {spec.hidden_size}, vocab {spec.vocab_size}",
        f"precision {plan.precision.describe()}",
        "",
        f"{'part':<12}{'parameters':>16}{'bytes':>18}{'size':>13}",
    ]
    for part in (*plan.parts, Part("total", plan.total_params, plan.total_bytes)):
        note = f"  ({part.note})" if part.note else ""
        lines.append(
            f"{part.name:<12}{part.params:>16,}{part.bytes:>18,}{_gb(part.bytes):>13}{note}"
        )
    moe_layers = [layer.moe for layer in spec.layers if layer.moe is not None]
    routing = ""
    if moe_layers:
        routing = f"; {moe_layers[0].top_k} of {moe_layers[0].num_experts} experts"
    lines += [
        "",
        f"active parameters per token: {plan.active_params:,} "
        f"({plan.active_params / 1e9:.2f} B; {plan.active_params_without_embeddings / 1e9:.2f} B "
        f"without embeddings and LM head){routing}",
        "",
        f"KV cache (fp{8 * plan.precision.float_bytes}), per layer group:",
    ]
    for group in plan.kv_groups:
        per_token = group.bytes_at(1, plan.precision.float_bytes)
        tensors = "V only" if group.tensors == 1 else "K and V"
        if group.kind == "mla":
            tensors = "latent + rope key, K and V expanded from it"
        window = f", keeps at most {group.window:,} tokens" if group.window else ""
        lines.append(
            f"  {group.layers} x {group.kind}: {group.n_kv_heads} heads x {group.head_dim}, "
            f"{tensors}{window}: {per_token:,} B/token"
        )
    if any(layer.attention.k_eq_v for layer in spec.layers):
        lines.append(
            "  K=V layers: K cached beside V, each step computes K for its own tokens"
            if plan.precision.shared_cache
            else "  K=V layers: V only, K rebuilt from it over the whole cache each step"
        )
    lines += [
        f"KV cache per token (before any window fills): {plan.kv_bytes(1):,} B",
        f"decode workspace (fp32 logits + one layer's gathered top-k experts): "
        f"{_gb(plan.workspace_bytes)}",
        "",
        f"{'context':>10}{'KV cache':>14}{'memory needed':>16}   (weights + KV + workspace)",
    ]
    for tokens in CONTEXTS:
        lines.append(
            f"{tokens:>10,}{_gb(plan.kv_bytes(tokens)):>14}{_gb(plan.memory_bytes(tokens)):>16}"
        )
    return "\n".join(lines)
