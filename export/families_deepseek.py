"""The DeepSeek-V3 reader (`deepseek_v3`, DeepSeek-R1): see `export.families`."""

from __future__ import annotations

import dataclasses

from export.errors import ConfigKeyError
from export.families_base import final_norm, legacy_rope, reject, yarn_mscale
from export.spec import (
    AttentionSpec,
    ConfigReader,
    LayerSpec,
    MlaSpec,
    MlpSpec,
    ModelSpec,
    MoeSpec,
    VectorSpec,
)


def deepseek_v3(config: ConfigReader) -> ModelSpec:
    """DeepSeek-V3 (transformers `models/deepseek_v3/modeling_deepseek_v3.py`,
    `DeepseekV3DecoderLayer`): MLA attention (`MlaSpec`), dense MLPs in the first
    `first_k_dense_replace` layers, then MoE layers: sigmoid scores, experts chosen by
    score + `e_score_correction_bias` within the best `topk_group` of `n_group` groups,
    weights renormalised (`norm_topk_prob`) and scaled (`routed_scaling_factor`), plus
    `n_shared_experts` always-on experts as one MLP."""
    reject(config, "attention_bias", bool, "biases on the attention projections")
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
    rope = legacy_rope(config)
    scale = (mla.nope_dim + mla.rope_dim) ** -0.5
    if rope.yarn is not None and config.has("rope_parameters"):
        # transformers `yarn_apply_mscale`: the softmax scale grows with the context factor
        mscale_all_dim = config.section("rope_parameters").get_float("mscale_all_dim", 0.0)
        if mscale_all_dim:
            scale *= yarn_mscale(rope.yarn[0], mscale_all_dim) ** 2
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
        scale=scale,
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
        vectors=final_norm(hidden),
    )
