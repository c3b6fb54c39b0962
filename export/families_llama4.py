"""The Llama 4 text reader (`llama4_text`, Llama 4 Scout): see `export.families`."""

from __future__ import annotations

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.families_base import final_norm, reject
from export.spec import (
    AttentionSpec,
    ConfigReader,
    LayerSpec,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    RopeSpec,
    TemperatureSpec,
    VectorSpec,
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


def llama4_text(config: ConfigReader) -> ModelSpec:
    """Llama 4 text (transformers `models/llama4/modeling_llama4.py`,
    `Llama4TextDecoderLayer`): MoE layers (`moe_layers`, else every
    `interleave_moe_layer_step`-th) with a sigmoid top-k router that scales the experts'
    input and a shared expert, dense MLP layers between; NoPE layers where
    `no_rope_layers[i]` is 0 (default every 4th) with attention temperature tuning, RoPE
    layers with chunked attention and an L2 qk-norm after RoPE."""
    reject(config, "attention_bias", bool, "biases on the attention projections")
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
        vectors=final_norm(hidden),
    )
