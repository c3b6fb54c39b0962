"""spec_from_config: each family's config keys become the spec; bad configs fail by key."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from export_configs import (
    tiny_deepseek_v3,
    tiny_gemma4,
    tiny_mixtral,
    tiny_qwen3,
    tiny_qwen3_moe,
)

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.families import spec_from_config

GEMMA4_26B = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "configs"
    / "gemma-4-26b-a4b-it.text_config.json"
)


def test_gemma4_mixes_sliding_and_full_layers_with_their_own_geometry() -> None:
    spec = spec_from_config(tiny_gemma4())
    sliding, full = spec.layers[0].attention, spec.layers[1].attention
    assert [layer.attention.kind for layer in spec.layers] == ["sliding", "full"] * 2
    assert (sliding.n_heads, sliding.n_kv_heads, sliding.head_dim) == (4, 2, 16)
    assert (full.n_heads, full.n_kv_heads, full.head_dim) == (4, 1, 32)
    assert (sliding.window, full.window) == (16, None)
    assert (sliding.k_eq_v, full.k_eq_v) == (False, True)
    assert (sliding.kv_tensors, full.kv_tensors) == (2, 1)
    assert (sliding.rope.rope_type, sliding.rope.theta) == ("default", 10_000.0)
    assert (full.rope.rope_type, full.rope.partial_rotary_factor) == ("proportional", 0.25)
    assert sliding.qk_norm and sliding.scale == 1.0
    assert spec.final_logit_softcapping == 30.0
    assert spec.tie_word_embeddings
    assert spec.embed_scale == math.sqrt(64)


def test_gemma4_runs_moe_beside_dense_mlp() -> None:
    layer = spec_from_config(tiny_gemma4()).layers[0]
    assert layer.mlp is not None and layer.moe is not None
    assert layer.mlp.intermediate_size == 96
    moe = layer.moe
    assert (moe.num_experts, moe.top_k, moe.expert_intermediate_size) == (8, 2, 32)
    assert layer.moe.activation == "gelu_pytorch_tanh"
    assert layer.moe.normalize_top_k
    keys = {v.key for v in layer.vectors}
    assert {"router.scale", "router.per_expert_scale", "pre_feedforward_layernorm_2.weight"} <= keys


def test_gemma4_26b_a4b_geometry() -> None:
    spec = spec_from_config(json.loads(GEMMA4_26B.read_text()))
    kinds = [layer.attention.kind for layer in spec.layers]
    assert (kinds.count("sliding"), kinds.count("full")) == (25, 5)
    full = spec.layers[5].attention
    assert (full.n_kv_heads, full.head_dim, full.k_eq_v) == (2, 512, True)
    assert (spec.layers[0].attention.n_kv_heads, spec.layers[0].attention.head_dim) == (8, 256)


def test_gemma4_without_k_eq_v_keeps_the_sliding_kv_heads_on_full_layers() -> None:
    config = tiny_gemma4() | {"attention_k_eq_v": False}
    full = spec_from_config(config).layers[1].attention
    assert (full.n_kv_heads, full.k_eq_v, full.kv_tensors) == (2, False, 2)


def test_multimodal_config_is_read_through_its_text_config() -> None:
    config = {"model_type": "gemma4", "text_config": tiny_gemma4()}
    assert spec_from_config(config).model_type == "gemma4_text"


def test_qwen3_moe_dense_layers_and_routing() -> None:
    spec = spec_from_config(tiny_qwen3_moe())
    assert [layer.moe is not None for layer in spec.layers] == [True, False, True]
    assert spec.layers[1].mlp is not None and spec.layers[1].mlp.intermediate_size == 80
    moe = spec.layers[0].moe
    assert moe is not None and not moe.normalize_top_k and moe.top_k == 2
    assert spec.layers[0].attention.scale == 16**-0.5


def test_mixtral_sliding_everywhere_and_head_dim_from_hidden() -> None:
    spec = spec_from_config(tiny_mixtral())
    assert all(layer.attention.window == 64 for layer in spec.layers)
    assert spec.layers[0].attention.head_dim == 8
    assert all(layer.mlp is None and layer.moe is not None for layer in spec.layers)
    assert not spec.layers[0].attention.qk_norm


def test_dense_qwen3() -> None:
    spec = spec_from_config(tiny_qwen3())
    assert all(layer.moe is None and layer.mlp is not None for layer in spec.layers)
    assert spec.layers[0].attention.kind == "full"


def test_unsupported_model_type_names_it_and_the_supported_ones() -> None:
    with pytest.raises(UnsupportedArchitecture) as err:
        spec_from_config({"model_type": "gpt2"})
    assert "'gpt2'" in str(err.value)
    for supported in ("gemma4_text", "mixtral", "qwen3", "qwen3_moe", "llama4_text", "deepseek_v3"):
        assert supported in str(err.value)


def _without(config: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != key}


@pytest.mark.parametrize(
    ("config", "key", "kind"),
    [
        (_without(tiny_gemma4(), "hidden_size"), "hidden_size", "missing"),
        (tiny_gemma4() | {"num_experts": None}, "num_experts", "missing"),
        (tiny_gemma4() | {"hidden_size": "64"}, "hidden_size", "integer"),
        (tiny_gemma4() | {"num_attention_heads": True}, "num_attention_heads", "integer"),
        (tiny_gemma4() | {"head_dim": 0}, "head_dim", "> 0"),
        (tiny_gemma4() | {"attention_k_eq_v": 1}, "attention_k_eq_v", "true or false"),
        (tiny_gemma4() | {"final_logit_softcapping": "x"}, "final_logit_softcapping", "number"),
        (_without(tiny_mixtral(), "num_local_experts"), "num_local_experts", "missing"),
        (tiny_qwen3() | {"rope_theta": "fast"}, "rope_theta", "number"),
        (
            {"model_type": "gemma4", "text_config": _without(tiny_gemma4(), "vocab_size")},
            "text_config.vocab_size",
            "missing",
        ),
    ],
)
def test_bad_key_is_named(config: dict[str, Any], key: str, kind: str) -> None:
    with pytest.raises(ConfigKeyError) as err:
        spec_from_config(config)
    assert f"'{key}'" in str(err.value)
    assert kind in str(err.value)


@pytest.mark.parametrize("make", [tiny_qwen3, tiny_qwen3_moe, tiny_mixtral, tiny_deepseek_v3])
def test_a_key_transformers_fills_in_is_read_with_its_default(make: Any) -> None:
    """A config without `rope_theta` (Qwen3-MoE, Mixtral and DeepSeek-V3 configs in the
    wild) loads in transformers with its model type's default base: so here too."""
    transformers = pytest.importorskip("transformers")
    config = _without(make(), "rope_theta")
    config.pop("rope_parameters", None)
    expected = transformers.AutoConfig.for_model(
        config["model_type"], **{k: v for k, v in config.items() if k != "model_type"}
    ).rope_parameters["rope_theta"]
    spec = spec_from_config(config)
    assert {layer.attention.rope.theta for layer in spec.layers} == {expected}


def test_bad_rope_type_names_the_nested_key_and_allowed_values() -> None:
    config = tiny_gemma4()
    config["rope_parameters"]["full_attention"]["rope_type"] = "yarn"
    with pytest.raises(
        ConfigKeyError,
        match=r"rope_parameters\.full_attention\.rope_type.*"
        r"allowed: default, proportional",
    ):
        spec_from_config(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layer_types": ["sliding_attention", "chunked_attention"] * 2}, r"layer_types\[1\]"),
        ({"layer_types": ["full_attention"]}, "'layer_types' has 1 entries"),
        ({"hidden_size_per_layer_input": 256}, "'hidden_size_per_layer_input'"),
        ({"num_kv_shared_layers": 2}, "'num_kv_shared_layers'"),
        ({"top_k_experts": 9}, "'top_k_experts'"),
    ],
)
def test_unsupported_gemma4_features_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedArchitecture, match=message):
        spec_from_config(tiny_gemma4() | change)
