"""Family readers: one small function per Hugging Face `model_type`, from config keys to a spec.

The registry `READERS` is the only place a model_type is named. A reader validates the keys
it reads (errors name the key) and rejects, by key, the features export does not build yet.
Each reader mirrors the layer construction of the transformers modeling file it names.
The readers of Llama 4 and DeepSeek-V3 live in `export.families_llama4` and
`export.families_deepseek`; what all readers share in `export.families_base`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.families_base import final_norm, layer_kinds, legacy_rope, per_layer, reject
from export.families_deepseek import deepseek_v3
from export.families_llama4 import llama4_text
from export.spec import (
    AttentionKind,
    AttentionSpec,
    ConfigReader,
    LayerSpec,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    RopeSpec,
    VectorSpec,
)


def _gemma4_text(config: ConfigReader) -> ModelSpec:
    """Gemma 4 text (transformers `models/gemma4/modeling_gemma4.py`, `Gemma4TextDecoderLayer`).

    Sliding layers use `head_dim` and `num_key_value_heads`; full layers use
    `global_head_dim` and, when `attention_k_eq_v`, `num_global_key_value_heads` with K=V.
    Every layer has a dense gated MLP; with `enable_moe_block` a routed MoE runs beside it.
    """
    reject(config, "hidden_size_per_layer_input", bool, "per-layer input embeddings (PLE)")
    reject(config, "num_kv_shared_layers", bool, "KV sharing between layers")
    reject(config, "attention_bias", bool, "biases on the attention projections")
    reject(config, "use_bidirectional_attention", bool, "bidirectional attention")
    hidden = config.get_positive_int("hidden_size")
    n_layers = config.get_positive_int("num_hidden_layers")
    n_heads = config.get_positive_int("num_attention_heads")
    k_eq_v = config.get_bool("attention_k_eq_v", False)
    activation = config.get_str("hidden_activation", "gelu_pytorch_tanh")
    eps = config.get_float("rms_norm_eps", 1e-6)
    if config.has("layer_types"):
        kinds = layer_kinds(config, n_layers)
    else:  # Gemma4TextConfig's default: five sliding layers, then one full
        kinds = ["sliding" if (i + 1) % 6 else "full" for i in range(n_layers)]
    kinds[-1] = "full"  # Gemma4TextConfig forces the last layer to full attention

    sliding = AttentionSpec(
        kind="sliding",
        n_heads=n_heads,
        n_kv_heads=config.get_positive_int("num_key_value_heads"),
        head_dim=config.get_positive_int("head_dim"),
        rope=_gemma4_rope(config, "sliding_attention"),
        window=config.get_positive_int("sliding_window"),
        k_eq_v=False,
        qk_norm="rms",
        v_norm=True,
        scale=1.0,
    )
    overrides = per_layer(config, n_layers, ("head_dim", "num_key_value_heads"))
    full_kv_heads = sliding.n_kv_heads
    full_head_dim = sliding.head_dim
    if not config.has("per_layer_config"):  # the keys Gemma4TextConfig converts from
        full_head_dim = config.get_positive_int("global_head_dim", 512)
        if k_eq_v and config.has("num_global_key_value_heads"):
            full_kv_heads = config.get_positive_int("num_global_key_value_heads")
    full = AttentionSpec(
        kind="full",
        n_heads=n_heads,
        n_kv_heads=full_kv_heads,
        head_dim=full_head_dim,
        rope=_gemma4_rope(config, "full_attention"),
        window=None,
        k_eq_v=k_eq_v,
        qk_norm="rms",
        v_norm=True,
        scale=1.0,
    )
    mlp = MlpSpec(config.get_positive_int("intermediate_size"), activation)
    moe = None
    if config.get_bool("enable_moe_block", False):
        moe = _gemma_moe(config, activation)

    layers = []
    for index, kind in enumerate(kinds):
        attention = sliding if kind == "sliding" else full
        if index in overrides:
            layer_config = overrides[index]
            attention = dataclasses.replace(
                attention,
                head_dim=layer_config.get_positive_int("head_dim", attention.head_dim),
                n_kv_heads=layer_config.get_positive_int(
                    "num_key_value_heads", attention.n_kv_heads
                ),
            )
        vectors = [*_gemma_layer_norms(hidden, attention), VectorSpec("layer_scalar", 1)]
        if moe is not None:
            vectors += [
                *(
                    VectorSpec(f"{name}.weight", hidden)
                    for name in (
                        "post_feedforward_layernorm_1",
                        "post_feedforward_layernorm_2",
                        "pre_feedforward_layernorm_2",
                    )
                ),
                VectorSpec("router.scale", hidden),
                VectorSpec("router.per_expert_scale", moe.num_experts),
            ]
        layers.append(LayerSpec(index, attention, mlp, moe, tuple(vectors)))

    return ModelSpec(
        model_type="gemma4_text",
        vocab_size=config.get_positive_int("vocab_size"),
        hidden_size=hidden,
        layers=tuple(layers),
        tie_word_embeddings=config.get_bool("tie_word_embeddings", True),
        final_logit_softcapping=config.get_optional_float("final_logit_softcapping"),
        rms_norm_eps=eps,
        max_position_embeddings=config.get_positive_int("max_position_embeddings"),
        embed_scale=math.sqrt(hidden),
        vectors=final_norm(hidden),
    )


def _gemma4_rope(config: ConfigReader, layer_type: str) -> RopeSpec:
    if not config.has("rope_parameters"):  # Gemma4TextConfig's defaults
        defaults = {
            "sliding_attention": RopeSpec(10_000.0, "default"),
            "full_attention": RopeSpec(1_000_000.0, "proportional", 0.25),
        }
        return defaults[layer_type]
    rope = config.section("rope_parameters").section(layer_type)
    return RopeSpec(
        theta=rope.get_float("rope_theta"),
        rope_type=rope.get_one_of("rope_type", ("default", "proportional"), "default"),
        partial_rotary_factor=rope.get_float("partial_rotary_factor", 1.0),
    )


def _gemma_moe(config: ConfigReader, activation: str) -> MoeSpec:
    """Gemma 4's routed experts (`Gemma4TextRouter`, `Gemma4TextExperts`) as configured."""
    moe = MoeSpec(
        num_experts=config.get_positive_int("num_experts"),
        top_k=config.get_positive_int("top_k_experts"),
        expert_intermediate_size=config.get_positive_int("moe_intermediate_size"),
        activation=activation,
        normalize_top_k=True,
        router_key="router.proj.weight",
        experts_key="experts",
    )
    if moe.top_k > moe.num_experts:
        raise UnsupportedArchitecture(
            f"config key 'top_k_experts' ({moe.top_k}) exceeds 'num_experts' ({moe.num_experts})"
        )
    return moe


def _gemma_layer_norms(hidden: int, attention: AttentionSpec) -> tuple[VectorSpec, ...]:
    """The norms of a Gemma 3/4 decoder layer: sandwich norms around attention and the
    feed-forward, and the per-head q/k norms."""
    return (
        *(
            VectorSpec(f"{name}.weight", hidden)
            for name in (
                "input_layernorm",
                "post_attention_layernorm",
                "pre_feedforward_layernorm",
                "post_feedforward_layernorm",
            )
        ),
        VectorSpec("self_attn.q_norm.weight", attention.head_dim),
        VectorSpec("self_attn.k_norm.weight", attention.head_dim),
    )


def _gemma3_text(config: ConfigReader) -> ModelSpec:
    """Gemma 3 text (transformers `models/gemma3/modeling_gemma3.py`, `Gemma3DecoderLayer`).

    Sliding and full layers share one geometry and cache K and V; they differ in the
    window and the RoPE base (`rope_parameters` per layer type, full layers possibly with
    linear scaling). Gemma 4's layer without its MoE and `layer_scalar`, and with
    `Gemma3RMSNorm`'s (1 + weight) scale, no v_norm, and q·k scaled by
    `query_pre_attn_scalar` ** -0.5 instead of 1.
    """
    reject(config, "attention_bias", bool, "biases on the attention projections")
    reject(config, "use_bidirectional_attention", bool, "bidirectional attention")
    reject(
        config,
        "attn_logit_softcapping",
        lambda _: True,
        "transformers' Gemma3Attention stores it but never applies it, so an export "
        "could not be verified against it",
    )
    hidden = config.get_positive_int("hidden_size")
    n_layers = config.get_positive_int("num_hidden_layers")
    if config.has("layer_types"):
        kinds = layer_kinds(config, n_layers)
    else:  # Gemma3TextConfig: `sliding_window_pattern` - 1 sliding layers, then one full
        pattern = config.get_positive_int("sliding_window_pattern", 6)
        kinds = ["sliding" if (i + 1) % pattern else "full" for i in range(n_layers)]
    scalar = config.get_float("query_pre_attn_scalar", 256.0)
    if scalar <= 0:
        raise ConfigKeyError(f"config key 'query_pre_attn_scalar' must be > 0, got {scalar}")
    base = AttentionSpec(
        kind="full",
        n_heads=config.get_positive_int("num_attention_heads"),
        n_kv_heads=config.get_positive_int("num_key_value_heads"),
        head_dim=config.get_positive_int("head_dim"),
        rope=_gemma3_rope(config, "full_attention"),
        window=None,
        k_eq_v=False,
        qk_norm="rms",
        v_norm=False,
        scale=scalar**-0.5,
    )
    attentions = {"full": base}
    if "sliding" in kinds:
        attentions["sliding"] = dataclasses.replace(
            base,
            kind="sliding",
            rope=_gemma3_rope(config, "sliding_attention"),
            window=config.get_positive_int("sliding_window"),
        )
    activation = config.get_str("hidden_activation", "gelu_pytorch_tanh")
    mlp: MlpSpec | None = MlpSpec(config.get_positive_int("intermediate_size"), activation)
    moe: MoeSpec | None = None
    router: tuple[VectorSpec, ...] = ()
    if config.has("num_experts"):
        # subtitled's split Gemma 3 (`export.moe_split`): each MLP's neurons as routed
        # experts under Gemma 4's router, in the MLP's place and fed the MLP's input.
        moe = _gemma_moe(config, activation)
        mlp = None
        router = (
            VectorSpec("router.scale", hidden),
            VectorSpec("router.per_expert_scale", moe.num_experts),
        )
    layers = tuple(
        LayerSpec(
            index,
            attentions[kind],
            mlp,
            moe,
            (*_gemma_layer_norms(hidden, attentions[kind]), *router),
        )
        for index, kind in enumerate(kinds)
    )
    return ModelSpec(
        model_type="gemma3_text",
        vocab_size=config.get_positive_int("vocab_size"),
        hidden_size=hidden,
        layers=layers,
        tie_word_embeddings=config.get_bool("tie_word_embeddings", True),
        final_logit_softcapping=config.get_optional_float("final_logit_softcapping"),
        rms_norm_eps=config.get_float("rms_norm_eps", 1e-6),
        max_position_embeddings=config.get_positive_int("max_position_embeddings"),
        # Gemma3TextScaledWordEmbedding: a float32 tensor of hidden_size ** 0.5 at fp32
        embed_scale=math.sqrt(hidden),
        vectors=final_norm(hidden),
        norm_offset=1.0,
    )


# Gemma3TextConfig.convert_rope_params_to_dict: layer type -> the older top-level key of
# its RoPE base, and the default base.
_GEMMA3_THETA = {
    "full_attention": ("rope_theta", 1_000_000.0),
    "sliding_attention": ("rope_local_base_freq", 10_000.0),
}


def _gemma3_rope(config: ConfigReader, layer_type: str) -> RopeSpec:
    """`rope_parameters[layer_type]` (transformers >= 5), or the keys Gemma3TextConfig
    converts from: the bases `rope_theta` and `rope_local_base_freq`, and `rope_scaling`
    on full layers. Types "default" and "linear" (Gemma 3 4B-27B: factor 8 on full
    layers)."""
    legacy_key, default_theta = _GEMMA3_THETA[layer_type]
    theta = config.get_float(legacy_key, default_theta)
    params, where = None, ""
    if config.has("rope_parameters"):
        section = config.section("rope_parameters")
        if section.has(layer_type):
            params, where = section.section(layer_type), f"rope_parameters.{layer_type}."
    elif layer_type == "full_attention" and config.has("rope_scaling"):
        params, where = config.section("rope_scaling"), "rope_scaling."
    if params is None:
        return RopeSpec(theta, "default")
    theta = params.get_float("rope_theta", theta)
    type_key = "type" if params.has("type") and not params.has("rope_type") else "rope_type"
    rope_type = params.get_one_of(type_key, ("default", "linear"), "default")
    partial = params.get_float("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise UnsupportedArchitecture(
            f"config key '{where}partial_rotary_factor' = {partial!r} is not supported yet: "
            "Gemma 3's RoPE rotates the whole head"
        )
    if rope_type == "default":
        return RopeSpec(theta, rope_type)
    factor = params.get_float("factor")
    if factor <= 0:
        raise ConfigKeyError(f"config key '{where}factor' must be > 0, got {factor}")
    return RopeSpec(theta, rope_type, linear_factor=factor)


def _llama_like(
    config: ConfigReader,
    *,
    model_type: str,
    kinds: list[AttentionKind],
    qk_norm: bool,
    moe: MoeSpec | None,
    moe_layers: set[int],
    dense_intermediate: int | None,
    default_eps: float = 1e-6,
) -> ModelSpec:
    """Qwen3 / Qwen3-MoE / Mixtral: pre-norm layers whose FFN is either a MoE or a dense MLP."""
    reject(config, "attention_bias", bool, "biases on the attention projections")
    hidden = config.get_positive_int("hidden_size")
    n_heads = config.get_positive_int("num_attention_heads")
    head_dim = config.get_positive_int("head_dim", hidden // n_heads)
    n_kv_heads = config.get_positive_int("num_key_value_heads", n_heads)
    activation = config.get_str("hidden_act", "silu")
    rope = legacy_rope(config)
    window = config.get_optional_int("sliding_window")
    layers = []
    for index, kind in enumerate(kinds):
        attention = AttentionSpec(
            kind=kind,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            rope=rope,
            window=window if kind == "sliding" else None,
            k_eq_v=False,
            qk_norm="rms" if qk_norm else None,
            v_norm=False,
            scale=head_dim**-0.5,
        )
        vectors = [
            VectorSpec("input_layernorm.weight", hidden),
            VectorSpec("post_attention_layernorm.weight", hidden),
        ]
        if qk_norm:
            vectors += [
                VectorSpec("self_attn.q_norm.weight", head_dim),
                VectorSpec("self_attn.k_norm.weight", head_dim),
            ]
        sparse = index in moe_layers
        mlp = None
        if not sparse:
            if dense_intermediate is None:
                raise UnsupportedArchitecture(f"layer {index} has neither a MoE nor a dense MLP")
            mlp = MlpSpec(dense_intermediate, activation)
        layers.append(LayerSpec(index, attention, mlp, moe if sparse else None, tuple(vectors)))
    return ModelSpec(
        model_type=model_type,
        vocab_size=config.get_positive_int("vocab_size"),
        hidden_size=hidden,
        layers=tuple(layers),
        tie_word_embeddings=config.get_bool("tie_word_embeddings", False),
        final_logit_softcapping=None,
        rms_norm_eps=config.get_float("rms_norm_eps", default_eps),
        max_position_embeddings=config.get_positive_int("max_position_embeddings"),
        embed_scale=1.0,
        vectors=final_norm(hidden),
    )


def _qwen3(config: ConfigReader) -> ModelSpec:
    """Dense Qwen3 (`models/qwen3`): sliding layers only when `use_sliding_window`."""
    n_layers = config.get_positive_int("num_hidden_layers")
    if config.has("layer_types"):
        kinds = layer_kinds(config, n_layers)
    elif config.get_bool("use_sliding_window", False):
        first = config.get_int("max_window_layers", 28)
        kinds = ["sliding" if i >= first else "full" for i in range(n_layers)]
    else:
        kinds = ["full"] * n_layers
    return _llama_like(
        config,
        model_type="qwen3",
        kinds=kinds,
        qk_norm=True,
        moe=None,
        moe_layers=set(),
        dense_intermediate=config.get_positive_int("intermediate_size"),
    )


def _qwen3_moe(config: ConfigReader) -> ModelSpec:
    """Qwen3-MoE (`models/qwen3_moe`, `Qwen3MoeDecoderLayer`): layer i is sparse unless listed
    in `mlp_only_layers`, when `(i + 1) % decoder_sparse_step == 0`."""
    reject(config, "use_sliding_window", bool, "sliding-window attention in Qwen3-MoE")
    n_layers = config.get_positive_int("num_hidden_layers")
    # `num_experts` is an alias of `num_local_experts` (Qwen3MoeConfig.attribute_map); saved
    # configs carry the latter.
    experts_key = "num_local_experts" if config.has("num_local_experts") else "num_experts"
    num_experts = config.get_int(experts_key)
    step = config.get_positive_int("decoder_sparse_step", 1)
    dense_only = set(config.get_int_list("mlp_only_layers", []))
    moe_layers = {
        i
        for i in range(n_layers)
        if i not in dense_only and num_experts > 0 and (i + 1) % step == 0
    }
    moe = MoeSpec(
        num_experts=num_experts,
        top_k=config.get_positive_int("num_experts_per_tok"),
        expert_intermediate_size=config.get_positive_int("moe_intermediate_size"),
        activation=config.get_str("hidden_act", "silu"),
        normalize_top_k=config.get_bool("norm_topk_prob", False),
        router_key="mlp.gate.weight",
        experts_key="mlp.experts",
    )
    dense = config.get_positive_int("intermediate_size") if len(moe_layers) < n_layers else None
    return _llama_like(
        config,
        model_type="qwen3_moe",
        kinds=["full"] * n_layers,
        qk_norm=True,
        moe=moe,
        moe_layers=moe_layers,
        dense_intermediate=dense,
    )


def _mixtral(config: ConfigReader) -> ModelSpec:
    """Mixtral (`models/mixtral`): every layer a MoE; `sliding_window`, when set, on all layers."""
    n_layers = config.get_positive_int("num_hidden_layers")
    kind: AttentionKind = "sliding" if config.has("sliding_window") else "full"
    moe = MoeSpec(
        num_experts=config.get_positive_int("num_local_experts"),
        top_k=config.get_positive_int("num_experts_per_tok"),
        expert_intermediate_size=config.get_positive_int("intermediate_size"),
        activation=config.get_str("hidden_act", "silu"),
        normalize_top_k=True,
        router_key="mlp.gate.weight",
        experts_key="mlp.experts",
    )
    return _llama_like(
        config,
        model_type="mixtral",
        kinds=[kind] * n_layers,
        qk_norm=False,
        moe=moe,
        moe_layers=set(range(n_layers)),
        dense_intermediate=None,
        default_eps=1e-5,  # MixtralConfig.rms_norm_eps
    )


READERS: Mapping[str, Callable[[ConfigReader], ModelSpec]] = {
    "gemma3_text": _gemma3_text,
    "gemma4_text": _gemma4_text,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "mixtral": _mixtral,
    "llama4_text": llama4_text,
    "deepseek_v3": deepseek_v3,
}


def spec_from_config(config: Mapping[str, Any]) -> ModelSpec:
    """Build the spec of a Hugging Face config dict (a text config, or a multimodal config
    whose `text_config` holds one). Raises `UnsupportedArchitecture` naming the model_type and
    the supported ones, or `ConfigKeyError` naming a missing or ill-typed key."""
    reader = ConfigReader(config)
    model_type = reader.get_str("model_type")
    if model_type not in READERS and reader.has("text_config"):
        reader = reader.section("text_config")
        model_type = reader.get_str("model_type")
    if model_type not in READERS:
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not supported; supported: {', '.join(sorted(READERS))}"
        )
    return READERS[model_type](reader)
