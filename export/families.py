"""Family readers: one small function per Hugging Face `model_type`, from config keys to a spec.

The registry `READERS` is the only place a model_type is named. A reader validates the keys
it reads (errors name the key) and rejects, by key, the features export does not build yet.
Each reader mirrors the layer construction of the transformers modeling file it names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.spec import (
    AttentionKind,
    AttentionSpec,
    ConfigReader,
    LayerSpec,
    MlaSpec,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    RopeSpec,
    TemperatureSpec,
    VectorSpec,
)

_LAYER_KINDS: dict[str, AttentionKind] = {
    "sliding_attention": "sliding",
    "full_attention": "full",
}


def _reject(config: ConfigReader, key: str, unsupported: Callable[[Any], bool], why: str) -> None:
    """Fail, naming the key, when a config uses a feature export does not build yet."""
    value = config.raw(key)
    if value is not None and unsupported(value):
        raise UnsupportedArchitecture(f"config key {key!r} = {value!r} is not supported yet: {why}")


def _layer_kinds(config: ConfigReader, n_layers: int) -> list[AttentionKind]:
    names = config.get_str_list("layer_types")
    if len(names) != n_layers:
        raise UnsupportedArchitecture(
            f"config key 'layer_types' has {len(names)} entries, 'num_hidden_layers' is {n_layers}"
        )
    kinds: list[AttentionKind] = []
    for index, name in enumerate(names):
        if name not in _LAYER_KINDS:
            raise UnsupportedArchitecture(
                f"config key 'layer_types[{index}]' is {name!r}; allowed: {', '.join(_LAYER_KINDS)}"
            )
        kinds.append(_LAYER_KINDS[name])
    return kinds


def _per_layer(
    config: ConfigReader, n_layers: int, allowed: tuple[str, ...]
) -> dict[int, ConfigReader]:
    """`per_layer_config` (transformers >= 5.2 `HeterogeneousConfigMixin`): layer index ->
    the config keys that layer overrides; only `allowed` keys are built."""
    if not config.has("per_layer_config"):
        return {}
    section = config.section("per_layer_config")
    layers: dict[int, ConfigReader] = {}
    for key in section.names():
        if not str(key).isdigit() or int(key) >= n_layers:
            raise ConfigKeyError(
                f"config key 'per_layer_config.{key}' must be a layer index below {n_layers}"
            )
        layer = section.section(key)
        unknown = sorted(set(layer.names()) - set(allowed))
        if unknown:
            raise UnsupportedArchitecture(
                f"config key 'per_layer_config.{key}' overrides {', '.join(unknown)}; "
                f"supported per layer: {', '.join(allowed)}"
            )
        layers[int(key)] = layer
    return layers


def _legacy_rope(config: ConfigReader) -> RopeSpec:
    """RoPE of families with one rope for all layers: `rope_parameters` (transformers >= 5)
    or the older top-level `rope_theta`."""
    if config.has("rope_parameters"):
        rope = config.section("rope_parameters")
        theta = rope.get_float("rope_theta")
        rope_type = rope.get_str("rope_type", "default")
        factor = rope.get_float("partial_rotary_factor", 1.0)
    else:
        theta = config.get_float("rope_theta")
        rope_type, factor = "default", 1.0
    if rope_type != "default":
        raise UnsupportedArchitecture(
            f"config key 'rope_parameters.rope_type' = {rope_type!r} is not supported yet "
            "for this family; supported: default"
        )
    return RopeSpec(theta=theta, rope_type=rope_type, partial_rotary_factor=factor)


def _final_norm(hidden_size: int) -> tuple[VectorSpec, ...]:
    return (VectorSpec("model.norm.weight", hidden_size),)


def _gemma4_text(config: ConfigReader) -> ModelSpec:
    """Gemma 4 text (transformers `models/gemma4/modeling_gemma4.py`, `Gemma4TextDecoderLayer`).

    Sliding layers use `head_dim` and `num_key_value_heads`; full layers use
    `global_head_dim` and, when `attention_k_eq_v`, `num_global_key_value_heads` with K=V.
    Every layer has a dense gated MLP; with `enable_moe_block` a routed MoE runs beside it.
    """
    _reject(config, "hidden_size_per_layer_input", bool, "per-layer input embeddings (PLE)")
    _reject(config, "num_kv_shared_layers", bool, "KV sharing between layers")
    _reject(config, "attention_bias", bool, "biases on the attention projections")
    _reject(config, "use_bidirectional_attention", bool, "bidirectional attention")
    hidden = config.get_positive_int("hidden_size")
    n_layers = config.get_positive_int("num_hidden_layers")
    n_heads = config.get_positive_int("num_attention_heads")
    k_eq_v = config.get_bool("attention_k_eq_v", False)
    activation = config.get_str("hidden_activation", "gelu_pytorch_tanh")
    eps = config.get_float("rms_norm_eps", 1e-6)
    if config.has("layer_types"):
        kinds = _layer_kinds(config, n_layers)
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
    overrides = _per_layer(config, n_layers, ("head_dim", "num_key_value_heads"))
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
                f"config key 'top_k_experts' ({moe.top_k}) exceeds "
                f"'num_experts' ({moe.num_experts})"
            )

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
        vectors = [
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
            VectorSpec("layer_scalar", 1),
        ]
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
        vectors=_final_norm(hidden),
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
    _reject(config, "attention_bias", bool, "biases on the attention projections")
    hidden = config.get_positive_int("hidden_size")
    n_heads = config.get_positive_int("num_attention_heads")
    head_dim = config.get_positive_int("head_dim", hidden // n_heads)
    n_kv_heads = config.get_positive_int("num_key_value_heads", n_heads)
    activation = config.get_str("hidden_act", "silu")
    rope = _legacy_rope(config)
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
        vectors=_final_norm(hidden),
    )


def _qwen3(config: ConfigReader) -> ModelSpec:
    """Dense Qwen3 (`models/qwen3`): sliding layers only when `use_sliding_window`."""
    n_layers = config.get_positive_int("num_hidden_layers")
    if config.has("layer_types"):
        kinds = _layer_kinds(config, n_layers)
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
    _reject(config, "use_sliding_window", bool, "sliding-window attention in Qwen3-MoE")
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


def _llama4_rope(config: ConfigReader) -> RopeSpec:
    """Llama 4 RoPE: complex (interleaved pairs), `default` or `llama3` frequency scaling."""
    rope = config.section("rope_parameters") if config.has("rope_parameters") else config
    rope_type = rope.get_one_of("rope_type", ("default", "llama3"), "default")
    llama3 = None
    if rope_type == "llama3":
        llama3 = (
            rope.get_float("factor"),
            rope.get_float("low_freq_factor"),
            rope.get_float("high_freq_factor"),
            rope.get_float("original_max_position_embeddings"),
        )
    theta = rope.get_float("rope_theta", 500_000.0)
    return RopeSpec(theta, rope_type, interleaved=True, llama3=llama3)


def _llama4_text(config: ConfigReader) -> ModelSpec:
    """Llama 4 text (transformers `models/llama4/modeling_llama4.py`,
    `Llama4TextDecoderLayer`): MoE layers (`moe_layers`, else every
    `interleave_moe_layer_step`-th) with a sigmoid top-k router that scales the experts'
    input and a shared expert, dense MLP layers between; NoPE layers where
    `no_rope_layers[i]` is 0 (default every 4th) with attention temperature tuning, RoPE
    layers with chunked attention and an L2 qk-norm after RoPE."""
    _reject(config, "attention_bias", bool, "biases on the attention projections")
    hidden = config.get_positive_int("hidden_size")
    n_layers = config.get_positive_int("num_hidden_layers")
    n_heads = config.get_positive_int("num_attention_heads")
    head_dim = config.get_positive_int("head_dim", hidden // n_heads)
    activation = config.get_str("hidden_act", "silu")
    interval = config.get_positive_int("no_rope_layer_interval", 4)
    uses_rope = [int((i + 1) % interval != 0) for i in range(n_layers)]
    if config.has("no_rope_layers"):
        uses_rope = config.get_int_list("no_rope_layers")
        if len(uses_rope) < n_layers:
            raise ConfigKeyError(
                f"config key 'no_rope_layers' has {len(uses_rope)} entries for {n_layers} layers"
            )
    # Llama4TextConfig: 8192 when the key is absent; null turns chunking off.
    chunk = 8192 if "attention_chunk_size" not in config.names() else None
    if config.has("attention_chunk_size"):
        chunk = config.get_positive_int("attention_chunk_size")
    kinds = [
        "chunked_attention" if rope and chunk is not None else "full_attention"
        for rope in uses_rope[:n_layers]
    ]
    if config.has("layer_types"):
        kinds = config.get_str_list("layer_types")
        allowed = ("chunked_attention", "full_attention")
        if len(kinds) != n_layers or not set(kinds) <= set(allowed):
            raise UnsupportedArchitecture(
                f"config key 'layer_types' must list {n_layers} of: {', '.join(allowed)}"
            )
    step = config.get_positive_int("interleave_moe_layer_step", 1)
    moe_layers = set(config.get_int_list("moe_layers", list(range(step - 1, n_layers, step))))
    temperature = None
    if config.get_bool("attn_temperature_tuning", True):
        temperature = TemperatureSpec(
            config.get_float("floor_scale", 8192.0), config.get_float("attn_scale", 0.1)
        )
    qk_l2 = config.get_bool("use_qk_norm", True)
    rope = _llama4_rope(config)
    size = config.get_positive_int("intermediate_size")
    moe = MoeSpec(
        num_experts=config.get_positive_int("num_local_experts", 16),
        top_k=config.get_positive_int("num_experts_per_tok", 1),
        expert_intermediate_size=size,
        activation=activation,
        normalize_top_k=False,
        router_key="feed_forward.router.weight",
        experts_key="feed_forward.experts",
        scoring="sigmoid",
        weights_on_input=True,
        experts_in_out=True,
        shared=MlpSpec(size, activation, "feed_forward.shared_expert"),
    )
    dense = MlpSpec(
        config.get_positive_int("intermediate_size_mlp", 16384), activation, "feed_forward"
    )
    layers = []
    for index in range(n_layers):
        nope = not uses_rope[index]
        attention = AttentionSpec(
            kind="full",
            n_heads=n_heads,
            n_kv_heads=config.get_positive_int("num_key_value_heads", n_heads),
            head_dim=head_dim,
            rope=rope,
            window=None,
            k_eq_v=False,
            qk_norm="l2" if qk_l2 and not nope else None,
            v_norm=False,
            scale=head_dim**-0.5,
            nope=nope,
            chunk=chunk if kinds[index] == "chunked_attention" else None,
            temperature=temperature if nope else None,
        )
        vectors = (
            VectorSpec("input_layernorm.weight", hidden),
            VectorSpec("post_attention_layernorm.weight", hidden),
        )
        sparse = index in moe_layers
        layers.append(
            LayerSpec(index, attention, None if sparse else dense, moe if sparse else None, vectors)
        )
    return ModelSpec(
        model_type="llama4_text",
        vocab_size=config.get_positive_int("vocab_size"),
        hidden_size=hidden,
        layers=tuple(layers),
        tie_word_embeddings=config.get_bool("tie_word_embeddings", False),
        final_logit_softcapping=None,
        rms_norm_eps=config.get_float("rms_norm_eps", 1e-5),
        max_position_embeddings=config.get_positive_int("max_position_embeddings", 131072),
        embed_scale=1.0,
        vectors=_final_norm(hidden),
    )


def _deepseek_v3(config: ConfigReader) -> ModelSpec:
    """DeepSeek-V3 (transformers `models/deepseek_v3/modeling_deepseek_v3.py`,
    `DeepseekV3DecoderLayer`): MLA attention (`MlaSpec`), dense MLPs in the first
    `first_k_dense_replace` layers, then MoE layers: sigmoid scores, experts chosen by
    score + `e_score_correction_bias` within the best `topk_group` of `n_group` groups,
    weights renormalised (`norm_topk_prob`) and scaled (`routed_scaling_factor`), plus
    `n_shared_experts` always-on experts as one MLP."""
    _reject(config, "attention_bias", bool, "biases on the attention projections")
    hidden = config.get_positive_int("hidden_size")
    n_layers = config.get_positive_int("num_hidden_layers")
    n_heads = config.get_positive_int("num_attention_heads")
    activation = config.get_str("hidden_act", "silu")
    q_lora = config.get_optional_int("q_lora_rank")
    mla = MlaSpec(
        q_lora_rank=q_lora,
        kv_lora_rank=config.get_positive_int("kv_lora_rank"),
        nope_dim=config.get_positive_int("qk_nope_head_dim"),
        rope_dim=config.get_positive_int("qk_rope_head_dim"),
        v_head_dim=config.get_positive_int("v_head_dim"),
    )
    rope = _legacy_rope(config)  # YaRN (the released checkpoints' rope_type) is rejected there
    attention = AttentionSpec(
        kind="full",
        n_heads=n_heads,
        n_kv_heads=1,
        head_dim=mla.kv_lora_rank + mla.rope_dim,
        rope=dataclasses.replace(rope, interleaved=config.get_bool("rope_interleave", True)),
        window=None,
        k_eq_v=False,
        qk_norm=None,
        v_norm=False,
        scale=mla.qk_head_dim**-0.5,
        mla=mla,
    )
    size = config.get_positive_int("moe_intermediate_size")
    experts_key = "n_routed_experts" if config.has("n_routed_experts") else "num_local_experts"
    moe = MoeSpec(
        num_experts=config.get_positive_int(experts_key),
        top_k=config.get_positive_int("num_experts_per_tok"),
        expert_intermediate_size=size,
        activation=activation,
        normalize_top_k=config.get_bool("norm_topk_prob", True),
        router_key="mlp.gate.weight",
        experts_key="mlp.experts",
        scoring="sigmoid",
        shared=MlpSpec(
            size * config.get_positive_int("n_shared_experts", 1), activation, "mlp.shared_experts"
        ),
        correction_bias_key="mlp.gate.e_score_correction_bias",
        groups=config.get_positive_int("n_group", 1),
        top_groups=config.get_positive_int("topk_group", 1),
        scaling=config.get_float("routed_scaling_factor", 1.0),
    )
    if moe.num_experts % moe.groups or moe.top_groups > moe.groups:
        raise ConfigKeyError(
            f"config keys 'n_group' ({moe.groups}) and 'topk_group' ({moe.top_groups}) do not "
            f"divide {moe.num_experts} experts"
        )
    first_moe = config.get_int("first_k_dense_replace", 0)
    dense = MlpSpec(config.get_positive_int("intermediate_size"), activation)
    vectors = [
        VectorSpec("input_layernorm.weight", hidden),
        VectorSpec("post_attention_layernorm.weight", hidden),
        VectorSpec("self_attn.kv_a_layernorm.weight", mla.kv_lora_rank),
    ]
    if q_lora is not None:
        vectors.append(VectorSpec("self_attn.q_a_layernorm.weight", q_lora))
    layers = tuple(
        LayerSpec(
            index,
            attention,
            dense if index < first_moe else None,
            moe if index >= first_moe else None,
            tuple(vectors),
        )
        for index in range(n_layers)
    )
    return ModelSpec(
        model_type="deepseek_v3",
        vocab_size=config.get_positive_int("vocab_size"),
        hidden_size=hidden,
        layers=layers,
        tie_word_embeddings=config.get_bool("tie_word_embeddings", False),
        final_logit_softcapping=None,
        rms_norm_eps=config.get_float("rms_norm_eps", 1e-6),
        max_position_embeddings=config.get_positive_int("max_position_embeddings", 4096),
        embed_scale=1.0,
        vectors=_final_norm(hidden),
    )


READERS: Mapping[str, Callable[[ConfigReader], ModelSpec]] = {
    "gemma4_text": _gemma4_text,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "mixtral": _mixtral,
    "llama4_text": _llama4_text,
    "deepseek_v3": _deepseek_v3,
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
