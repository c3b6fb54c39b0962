"""The ONNX graph of a decoder-only LM with an explicit KV cache: routers, the decoder
layer of each family (a registry by model_type), then `build_model` / `write_model`.

One graph serves prefill and decode: `input_ids` and `position_ids` are (batch, sequence)
with dynamic sequence, each layer takes its past cache and returns the present one
(GroupQueryAttention layers: one shared buffer, with their held lengths in
`cache_lengths`; see `onnx_attention`). The rows of a batch share their positions (the
mask is built from row 0; no padding).
Initializers keep the checkpoint key. Opset 20 (Gelu with tanh approximation) plus ONNX
Runtime's `com.microsoft` ops where they fit (see README "ONNX Runtime fused ops").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.checkpoint import checkpoint_shapes
from export.errors import ExportError, UnsupportedArchitecture
from export.onnx_attention import Positions, Rope, attention, length_slots
from export.onnx_mla import mla_attention
from export.onnx_native import native_experts, native_fits
from export.onnx_ops import (
    MS,
    OPSET,
    Graph,
    Progress,
    TensorStore,
    Weights,
    embed,
    embedding_table,
    key_of,
    linear,
    mlp,
    rms_norm,
    sparse_experts,
    tied_head,
)
from export.onnx_qmoe import fused_experts, qmoe_fits
from export.plan import PRECISIONS, Precision
from export.spec import LayerSpec, ModelSpec, MoeSpec, RopeSpec
from subtitled.translate.contract import (
    CACHE_LENGTHS,
    INPUT_IDS,
    LOGITS,
    LOGITS_ROWS,
    POSITION_IDS,
    past_name,
    present_name,
)
from subtitled.translate.native import DOMAIN as NATIVE


def top_k_routing(
    g: Graph, moe: MoeSpec, logits: str, scope: str, layer_key: str
) -> tuple[str, str]:
    """Expert indices and weights (N, k) from router logits (N, E), as `moe` says: scores by
    softmax or sigmoid; the choice optionally biased (`correction_bias_key`) and limited to
    the best expert groups (DeepSeek-V3 `noaux_tc`, `_group_limit`); the chosen experts'
    unbiased scores, renormalised to sum to 1 when `normalize_top_k`, times `scaling`.
    Softmax scores renormalised over the top k are the softmax of the top k logits (the
    full softmax's denominator cancels; softmax is monotonic, so the choice is the same):
    two nodes instead of five (Mixtral, Qwen3-MoE with `norm_topk_prob`, Gemma 4)."""
    plain = moe.correction_bias_key is None and moe.groups <= 1
    if moe.scoring == "softmax" and moe.normalize_top_k and plain:
        top, index = g.ops("TopK", [logits, g.ints(moe.top_k)], f"{scope}/TopK", 2, axis=-1)
        weights = g.op("Softmax", [top], f"{scope}/Softmax", axis=-1)
        if moe.scaling != 1.0:
            weights = g.op("Mul", [weights, g.scalar(moe.scaling)], f"{scope}/Scaling")
        return index, weights
    if moe.scoring == "softmax":
        scores = g.op("Softmax", [logits], f"{scope}/Softmax", axis=-1)
    else:
        scores = g.op("Sigmoid", [logits], f"{scope}/Sigmoid")
    choice = scores
    if moe.correction_bias_key is not None:
        bias = g.weight(f"{layer_key}.{moe.correction_bias_key}")
        choice = g.op("Add", [scores, bias], f"{scope}/CorrectionBias")
    if moe.groups > 1:
        choice = _group_limit(g, moe, choice, scope)
    weights, index = g.ops("TopK", [choice, g.ints(moe.top_k)], f"{scope}/TopK", 2, axis=-1)
    if choice != scores:
        weights = g.op("GatherElements", [scores, index], f"{scope}/Weights", axis=-1)
    if moe.normalize_top_k:
        total = g.op("ReduceSum", [weights, g.ints(-1)], f"{scope}/TopKSum", keepdims=1)
        total = g.op("Add", [total, g.scalar(1e-20)], f"{scope}/TopKSumEps")
        weights = g.op("Div", [weights, total], f"{scope}/Renormalize")
    if moe.scaling != 1.0:
        weights = g.op("Mul", [weights, g.scalar(moe.scaling)], f"{scope}/Scaling")
    return index, weights


def _group_limit(g: Graph, moe: MoeSpec, choice: str, scope: str) -> str:
    """DeepSeek-V3: keep the experts of the `top_groups` groups whose two best scores sum
    highest; the others get -inf (transformers `DeepseekV3TopkRouter.forward`)."""
    size = moe.num_experts // moe.groups
    grouped = g.op("Reshape", [choice, g.ints(-1, moe.groups, size)], f"{scope}/Groups")
    best_two = g.ops("TopK", [grouped, g.ints(2)], f"{scope}/GroupTop2", 2, axis=-1)[0]
    group_scores = g.op("ReduceSum", [best_two, g.ints(-1)], f"{scope}/GroupScores", keepdims=0)
    top = g.ops("TopK", [group_scores, g.ints(moe.top_groups)], f"{scope}/TopGroups", 2, axis=-1)
    zeros = g.op("Mul", [group_scores, g.scalar(0.0)], f"{scope}/GroupZeros")  # (N, G)
    ones = g.op(
        "Add",
        [g.op("Mul", [top[0], g.scalar(0.0)], f"{scope}/GroupZeros2"), g.scalar(1.0)],
        f"{scope}/GroupOnes",
    )  # (N, top_groups)
    mask = g.op("ScatterElements", [zeros, top[1], ones], f"{scope}/GroupMask", axis=1)
    mask = g.op("Unsqueeze", [mask, g.ints(-1)], f"{scope}/GroupMaskColumn")  # (N, G, 1)
    keep = g.op("Greater", [mask, g.scalar(0.5)], f"{scope}/Keep")
    masked = g.op("Where", [keep, grouped, g.scalar(float("-inf"))], f"{scope}/Masked")
    return g.op("Reshape", [masked, g.ints(-1, moe.num_experts)], f"{scope}/Ungroup")


def gemma4_router(g: Graph, spec: ModelSpec, moe: MoeSpec, x: str, scope: str) -> tuple[str, str]:
    """transformers `Gemma4TextRouter`: routing of proj(norm(x) * scale / sqrt(H)), the
    top-k weights then multiplied by `per_expert_scale`."""
    normed = rms_norm(g, x, None, spec.rms_norm_eps, f"{scope}/norm")
    scaled = g.op("Mul", [normed, g.weight(f"{key_of(scope)}.scale")], f"{scope}/Scale")
    scaled = g.op("Mul", [scaled, g.scalar(spec.hidden_size**-0.5)], f"{scope}/RootSize")
    logits = linear(g, scaled, f"{key_of(scope)}.proj.weight", f"{scope}/proj", quantize=False)
    index, weights = top_k_routing(g, moe, logits, scope, key_of(scope).rsplit(".", 1)[0])
    expert_scale = g.op(
        "Gather",
        [g.weight(f"{key_of(scope)}.per_expert_scale"), index],
        f"{scope}/per_expert_scale/Gather",
    )
    return index, g.op("Mul", [weights, expert_scale], f"{scope}/per_expert_scale/Mul")


def routed_experts(
    g: Graph,
    spec: ModelSpec,
    moe: MoeSpec,
    x: str,
    index: str,
    weights: str,
    scope: str,
) -> str:
    """The selected experts `index` (N, k) of tokens x (N, H) summed with `weights` (N, k);
    with `moe.weights_on_input` (Llama 4) x is (N, k, H), already scaled, and the sum is
    plain. Subtitled's native kernel where it was asked for and fits (`export.onnx_native`),
    else the sparse gather path."""
    on_input = moe.weights_on_input
    if native_fits(g, moe, spec.hidden_size):
        return native_experts(g, moe, x, index, weights, not on_input, scope)
    return sparse_experts(g, moe, x, index, None if on_input else weights, scope, on_input)


def _expert_tokens(g: Graph, spec: ModelSpec, moe: MoeSpec, x: str, scope: str) -> str:
    """x (B, S, H) as the experts' path wants it: as is for the native kernel, else (N, H)
    (`_from_expert_tokens` undoes it)."""
    if native_fits(g, moe, spec.hidden_size) and moe.groups <= 1:
        return x
    return g.op("Reshape", [x, g.ints(-1, spec.hidden_size)], f"{scope}/flatten")


def _from_expert_tokens(g: Graph, y: str, x: str, tokens: str, scope: str) -> str:
    """The experts' output y shaped as x (B, S, H), for `tokens` = _expert_tokens(x)."""
    if tokens == x:
        return y
    return g.op("Reshape", [y, g.op("Shape", [x], f"{scope}/shape")], f"{scope}/unflatten")


def sparse_moe_block(g: Graph, spec: ModelSpec, layer: LayerSpec, moe: MoeSpec, x: str) -> str:
    """Qwen3-MoE / Mixtral `SparseMoeBlock`, Llama 4 `Llama4TextMoe`, DeepSeek-V3
    `DeepseekV3MoE`: a linear router over x, the sparse experts (ONNX Runtime's fused
    `QMoE` where it computes exactly this block, see `export.onnx_qmoe`), the shared
    expert(s) if any; x (B, S, H) -> (B, S, H)."""
    layer_scope = f"/model/layers.{layer.index}"
    flat = _expert_tokens(g, spec, moe, x, f"{layer_scope}/moe")
    router_scope = f"{layer_scope}/{moe.router_key.removesuffix('.weight').replace('.', '/')}"
    logits = linear(
        g, flat, f"{key_of(layer_scope)}.{moe.router_key}", router_scope, quantize=False
    )  # (N, E)
    experts_scope = f"{layer_scope}/{moe.experts_key.replace('.', '/')}"
    if qmoe_fits(g, moe, spec.hidden_size) and not native_fits(g, moe, spec.hidden_size):
        out = fused_experts(g, moe, flat, logits, experts_scope)
    else:
        index, weights = top_k_routing(g, moe, logits, router_scope, key_of(layer_scope))
        if moe.weights_on_input:  # Llama 4: expert_k(x * score_k), summed unweighted
            inputs = g.op(
                "Mul",
                [
                    g.op("Unsqueeze", [flat, g.ints(-2)], f"{experts_scope}/Tokens"),  # (N, 1, H)
                    g.op("Unsqueeze", [weights, g.ints(-1)], f"{experts_scope}/Scores"),  # (N,k,1)
                ],
                f"{experts_scope}/ScaleInput",
            )  # (N, k, H)
            out = routed_experts(g, spec, moe, inputs, index, weights, experts_scope)
        else:
            out = routed_experts(g, spec, moe, flat, index, weights, experts_scope)
    if moe.shared is not None:
        shared_scope = f"{layer_scope}/{moe.shared.key.replace('.', '/')}"
        shared = mlp(g, flat, moe.shared.activation, shared_scope)
        out = g.op("Add", [out, shared], f"{layer_scope}/moe/shared_add")
    return _from_expert_tokens(g, out, x, flat, f"{layer_scope}/moe")


def llama_decoder_layer(
    g: Graph,
    spec: ModelSpec,
    layer: LayerSpec,
    x: str,
    pos: Positions,
    q_rope: Rope | None,
) -> tuple[str, dict[str, str]]:
    """Pre-norm layer of Qwen3, Qwen3-MoE, Mixtral, Llama 4 and DeepSeek-V3:
    x + attn(norm(x)) (MLA for DeepSeek), then x + ffn(norm(x)) where the FFN is the
    layer's MoE or its dense MLP."""
    scope = f"/model/layers.{layer.index}"
    eps, offset = spec.rms_norm_eps, spec.norm_offset

    def norm(t: str, name: str) -> str:
        return rms_norm(g, t, f"{key_of(scope)}.{name}.weight", eps, f"{scope}/{name}", offset)

    attend = mla_attention if layer.attention.mla is not None else attention
    attn_out, present = attend(
        g, spec, layer, norm(x, "input_layernorm"), pos, q_rope, f"{scope}/self_attn"
    )
    x = g.op("Add", [x, attn_out], f"{scope}/attn_residual")
    h = norm(x, "post_attention_layernorm")
    if layer.moe is not None:
        ffn = sparse_moe_block(g, spec, layer, layer.moe, h)
    elif layer.mlp is not None:
        ffn = mlp(g, h, layer.mlp.activation, f"{scope}/{layer.mlp.key.replace('.', '/')}")
    else:
        raise UnsupportedArchitecture(f"layer {layer.index} has neither a MoE nor a dense MLP")
    return g.op("Add", [x, ffn], f"{scope}/ffn_residual"), present


def gemma_decoder_layer(
    g: Graph,
    spec: ModelSpec,
    layer: LayerSpec,
    x: str,
    pos: Positions,
    q_rope: Rope | None,
) -> tuple[str, dict[str, str]]:
    """transformers `Gemma4TextDecoderLayer.forward` and `Gemma3DecoderLayer.forward`:
    sandwich norms around attention and the feed-forward; Gemma 4's MoE (fed the
    residual) beside the dense MLP when the layer has one, then its `layer_scalar` when
    the layer has that weight."""
    scope = f"/model/layers.{layer.index}"
    eps, offset = spec.rms_norm_eps, spec.norm_offset

    def norm(t: str, name: str) -> str:
        return rms_norm(g, t, f"{key_of(scope)}.{name}.weight", eps, f"{scope}/{name}", offset)

    attn_out, present = attention(
        g, spec, layer, norm(x, "input_layernorm"), pos, q_rope, f"{scope}/self_attn"
    )
    x = g.op("Add", [x, norm(attn_out, "post_attention_layernorm")], f"{scope}/attn_residual")
    if layer.mlp is None and layer.moe is not None:
        # routed experts in the MLP's place (a split Gemma 3, `export.moe_split`)
        h = norm(x, "pre_feedforward_layernorm")
        flat = _expert_tokens(g, spec, layer.moe, h, scope)
        index, weights = gemma4_router(g, spec, layer.moe, flat, f"{scope}/router")
        routed = routed_experts(g, spec, layer.moe, flat, index, weights, f"{scope}/experts")
        ffn = _from_expert_tokens(g, routed, h, flat, scope)
    elif layer.mlp is None:
        raise UnsupportedArchitecture(f"gemma layer {layer.index} has no dense MLP")
    else:
        ffn = mlp(g, norm(x, "pre_feedforward_layernorm"), layer.mlp.activation, f"{scope}/mlp")
    if layer.moe is not None and layer.mlp is not None:
        dense = norm(ffn, "post_feedforward_layernorm_1")
        flat = _expert_tokens(g, spec, layer.moe, x, scope)
        index, weights = gemma4_router(g, spec, layer.moe, flat, f"{scope}/router")
        experts = routed_experts(
            g,
            spec,
            layer.moe,
            norm(flat, "pre_feedforward_layernorm_2"),
            index,
            weights,
            f"{scope}/experts",
        )
        experts = _from_expert_tokens(g, experts, x, flat, scope)
        ffn = g.op(
            "Add", [dense, norm(experts, "post_feedforward_layernorm_2")], f"{scope}/combine"
        )
    x = g.op("Add", [x, norm(ffn, "post_feedforward_layernorm")], f"{scope}/ffn_residual")
    if not any(vector.key == "layer_scalar" for vector in layer.vectors):
        return x, present
    return g.op(
        "Mul", [x, g.weight(f"{key_of(scope)}.layer_scalar")], f"{scope}/layer_scalar"
    ), present


LayerBuilder = Callable[
    [Graph, ModelSpec, LayerSpec, str, Positions, Rope | None],
    tuple[str, dict[str, str]],
]
LAYER_BUILDERS: Mapping[str, LayerBuilder] = {
    "gemma3_text": gemma_decoder_layer,
    "gemma4_text": gemma_decoder_layer,
    "qwen3": llama_decoder_layer,
    "qwen3_moe": llama_decoder_layer,
    "mixtral": llama_decoder_layer,
    "llama4_text": llama_decoder_layer,
    "deepseek_v3": llama_decoder_layer,
}


def build_model(
    spec: ModelSpec,
    weights: Weights,
    precision: Precision | None = None,
    store: TensorStore | None = None,
    progress: Progress | None = None,
) -> onnx.ModelProto:
    """The ONNX model of `spec` with the checkpoint tensors `weights` at `precision` (fp32
    by default). With a `store`, large initializers go to its external-data file as they
    are made, so only one checkpoint tensor is in memory at a time."""
    if spec.model_type not in LAYER_BUILDERS:
        raise UnsupportedArchitecture(
            f"ONNX export of model_type {spec.model_type!r} is not built yet; "
            f"built: {', '.join(LAYER_BUILDERS)}"
        )
    g = Graph(weights, checkpoint_shapes(spec), precision or PRECISIONS["fp32"], store, progress)
    ids = helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"])
    pids = helper.make_tensor_value_info(POSITION_IDS, TensorProto.INT64, ["batch", "sequence"])
    inputs, outputs = [ids, pids], []
    slots = set(length_slots(spec, g.precision.shared_cache).values())
    if slots:
        inputs.append(helper.make_tensor_value_info(CACHE_LENGTHS, TensorProto.INT64, [len(slots)]))
    first_row = g.op("Gather", [POSITION_IDS, g.ints(0)], "/model/positions/FirstRow")
    query = g.op("Squeeze", [first_row, g.ints(0)], "/model/positions/Query")  # (S,)
    start = g.op(
        "Gather",
        [query, g.const("/const/zero_i64", np.array(0, np.int64))],
        "/model/positions/Start",
    )
    length = g.op(
        "Squeeze", [g.op("Shape", [query], "/model/positions/Shape")], "/model/positions/Length"
    )
    batch = g.op(
        "Slice",
        [g.op("Shape", [INPUT_IDS], "/model/positions/IdsShape"), g.ints(0), g.ints(1)],
        "/model/positions/Batch",
    )  # (1,)
    pos = Positions(query, start, length, batch, POSITION_IDS)

    table = embedding_table(g, "model.embed_tokens.weight")  # (V, H)
    x = embed(g, table, INPUT_IDS, "/model/embed_tokens")  # (B, S, H)
    if spec.embed_scale != 1.0:
        x = g.op("Mul", [x, g.scalar(spec.embed_scale)], "/model/embed_tokens/Scale")
    ropes: dict[tuple[RopeSpec, int], Rope] = {}
    for layer in spec.layers:
        a = layer.attention
        if (a.rope, a.rotary_dim) not in ropes and not a.nope:
            ropes[(a.rope, a.rotary_dim)] = Rope(
                a.rope, a.rotary_dim, f"/model/rotary_emb.{len(ropes)}"
            )
        rope = None if a.nope else ropes[(a.rope, a.rotary_dim)]
        x, present = LAYER_BUILDERS[spec.model_type](g, spec, layer, x, pos, rope)
        for tensor, value in present.items():
            shape: list[str | int] = ["batch", a.n_kv_heads, f"past_{layer.index}", a.head_dim]
            inputs.append(
                helper.make_tensor_value_info(
                    past_name(layer.index, tensor), TensorProto.FLOAT, shape
                )
            )
            out_name = present_name(layer.index, tensor)
            g.nodes.append(
                helper.make_node(
                    "Identity",
                    [value],
                    [out_name],
                    name=f"/model/layers.{layer.index}/{tensor}_present",
                )
            )
            shape[2] = f"present_{layer.index}"
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape))

    # Logits for the last `logits_rows` positions only (prefill needs one row; the head
    # over the vocabulary is the largest matmul of a step).
    inputs.append(helper.make_tensor_value_info(LOGITS_ROWS, TensorProto.INT64, [1]))
    x = g.op(
        "Slice",
        [
            x,
            g.op("Neg", [LOGITS_ROWS], "/lm_head/RowsStart"),
            g.ints(np.iinfo(np.int64).max),
            g.ints(1),
        ],
        "/lm_head/Rows",
    )
    x = rms_norm(g, x, "model.norm.weight", spec.rms_norm_eps, "/model/norm", spec.norm_offset)
    flat = g.op("Reshape", [x, g.ints(-1, spec.hidden_size)], "/lm_head/Flatten")
    if spec.tie_word_embeddings:
        logits = tied_head(g, table, flat, "/lm_head")  # (N, V)
    else:
        logits = linear(g, flat, "lm_head.weight", "/lm_head")
    if spec.final_logit_softcapping is not None:
        cap = g.scalar(spec.final_logit_softcapping)
        logits = g.op(
            "Mul",
            [
                g.op(
                    "Tanh",
                    [g.op("Div", [logits, cap], "/lm_head/softcap/Div")],
                    "/lm_head/softcap/Tanh",
                ),
                cap,
            ],
            "/lm_head/softcap/Mul",
        )
    batch = g.op(
        "Slice",
        [g.op("Shape", [INPUT_IDS], "/lm_head/Shape"), g.ints(0), g.ints(1)],
        "/lm_head/Batch",
    )
    out_shape = g.op("Concat", [batch, g.ints(-1, spec.vocab_size)], "/lm_head/OutShape", axis=0)
    g.nodes.append(
        helper.make_node("Reshape", [logits, out_shape], [LOGITS], name="/lm_head/Reshape")
    )
    outputs.insert(
        0,
        helper.make_tensor_value_info(
            LOGITS, TensorProto.FLOAT, ["batch", "rows", spec.vocab_size]
        ),
    )

    graph = helper.make_graph(
        g.nodes, "subtitled_lm", inputs, outputs, list(g.initializers.values())
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid(MS, 1),
            *([helper.make_opsetid(NATIVE, 1)] if any(n.domain == NATIVE for n in g.nodes) else []),
        ],
        producer_name="subtitled-export",
    )
    model.ir_version = 10
    if store is None:
        _check(model)
    return model


def _register_runtime_schemas() -> None:
    """Teach the ONNX checker ONNX Runtime's `SimplifiedLayerNormalization` (RMSNorm, which
    ONNX Runtime registers in the default domain; `export.onnx_ops.rms_norm`), so the check
    still covers every other node."""
    name = "SimplifiedLayerNormalization"
    if onnx.defs.has(name):
        return
    T = onnx.defs.OpSchema.FormalParameter
    schema = onnx.defs.OpSchema(
        name,
        "",
        1,
        inputs=[T("X", "T"), T("scale", "T")],
        outputs=[T("Y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float tensors")],
        attributes=[
            onnx.defs.OpSchema.Attribute(
                "axis", onnx.defs.OpSchema.AttrType.INT, "", required=False
            ),
            onnx.defs.OpSchema.Attribute(
                "epsilon", onnx.defs.OpSchema.AttrType.FLOAT, "", required=False
            ),
        ],
    )
    onnx.defs.register_schema(schema)


def _check(model: onnx.ModelProto | str) -> None:
    _register_runtime_schemas()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the built ONNX graph is invalid: {exc}") from exc


def write_model(
    spec: ModelSpec,
    weights: Weights,
    path: Path,
    precision: Precision,
    progress: Progress | None = None,
) -> list[Path]:
    """Write the model to `path` (the graph) and `path`.data (the weights, written tensor by
    tensor); returns both paths."""
    data = path.with_name(path.name + ".data")
    store = TensorStore(data)
    try:
        model = build_model(spec, weights, precision, store, progress)
    finally:
        store.close()
    onnx.save_model(model, path)
    _check(str(path))
    return [path, data]
