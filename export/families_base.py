"""What the family readers share: rejecting unbuilt features by key, per-layer attention
kinds and overrides, the one-rope-for-all-layers RoPE, the final norm."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.spec import (
    AttentionKind,
    ConfigReader,
    RopeSpec,
    VectorSpec,
)

LAYER_KINDS: dict[str, AttentionKind] = {
    "sliding_attention": "sliding",
    "full_attention": "full",
}


def reject(config: ConfigReader, key: str, unsupported: Callable[[Any], bool], why: str) -> None:
    """Fail, naming the key, when a config uses a feature export does not build yet."""
    value = config.raw(key)
    if value is not None and unsupported(value):
        raise UnsupportedArchitecture(f"config key {key!r} = {value!r} is not supported yet: {why}")


def layer_kinds(config: ConfigReader, n_layers: int) -> list[AttentionKind]:
    names = config.get_str_list("layer_types")
    if len(names) != n_layers:
        raise UnsupportedArchitecture(
            f"config key 'layer_types' has {len(names)} entries, 'num_hidden_layers' is {n_layers}"
        )
    kinds: list[AttentionKind] = []
    for index, name in enumerate(names):
        if name not in LAYER_KINDS:
            raise UnsupportedArchitecture(
                f"config key 'layer_types[{index}]' is {name!r}; allowed: {', '.join(LAYER_KINDS)}"
            )
        kinds.append(LAYER_KINDS[name])
    return kinds


def per_layer(
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


DEFAULT_ROPE_THETA = {"mixtral": 1_000_000.0, "gpt_oss": 150_000.0}
"""transformers' `default_theta` where it is not 10,000 (the rest: Llama, Qwen3,
Qwen3-MoE, DeepSeek-V3), used when a config leaves `rope_theta` out, as transformers does."""


def legacy_rope(config: ConfigReader) -> RopeSpec:
    """RoPE of families with one rope for all layers: `rope_parameters` (transformers >= 5)
    or the older top-level `rope_theta`; `default` or `yarn` (DeepSeek-V3/R1's released
    configs, long-context Qwen3). A config without `rope_theta` gets transformers' default
    for its model type (`DEFAULT_ROPE_THETA`), as transformers reads it."""
    model_type = config.get_str("model_type", "") if config.has("model_type") else ""
    default_theta = DEFAULT_ROPE_THETA.get(model_type, 10_000.0)
    if not config.has("rope_parameters"):
        return RopeSpec(theta=config.get_float("rope_theta", default_theta), rope_type="default")
    rope = config.section("rope_parameters")
    theta = rope.get_float("rope_theta", default_theta)
    rope_type = rope.get_str("rope_type", "default")
    partial = rope.get_float("partial_rotary_factor", 1.0)
    if rope_type == "default":
        return RopeSpec(theta=theta, rope_type=rope_type, partial_rotary_factor=partial)
    if rope_type != "yarn":
        raise UnsupportedArchitecture(
            f"config key 'rope_parameters.rope_type' = {rope_type!r} is not supported yet "
            "for this family; supported: default, yarn"
        )
    original = rope.get_float("original_max_position_embeddings")
    factor = rope.get_float("factor", 0.0) or config.get_float("max_position_embeddings") / original
    attention = rope.get_float("attention_factor", 0.0)
    if not attention:  # as transformers infers it
        mscale, mscale_all_dim = (
            rope.get_float("mscale", 0.0),
            rope.get_float("mscale_all_dim", 0.0),
        )
        if mscale and mscale_all_dim:
            attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention = yarn_mscale(factor, 1.0)
    yarn = (
        factor,
        rope.get_float("beta_fast", 0.0) or 32.0,
        rope.get_float("beta_slow", 0.0) or 1.0,
        original,
        rope.get_bool("truncate", True),
    )
    return RopeSpec(theta, rope_type, partial, yarn=yarn, attention_factor=attention)


def yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's attention scale for a context `factor` (1 when not extended)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def final_norm(hidden_size: int) -> tuple[VectorSpec, ...]:
    return (VectorSpec("model.norm.weight", hidden_size),)
