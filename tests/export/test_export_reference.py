"""The spec and plan against real transformers models built from the same tiny configs:
parameter counts and attention/MoE shapes must agree with what transformers instantiates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from export_configs import ALL

from export.checkpoint import checkpoint_shapes
from export.families import spec_from_config
from export.plan import PRECISIONS, make_plan

torch = pytest.importorskip(
    "torch", reason="the export extra is not installed: pip install -e '.[export]'"
)
transformers = pytest.importorskip(
    "transformers", reason="the export extra is not installed: pip install -e '.[export]'"
)


def _model(config: dict[str, Any]) -> Any:
    settings = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **settings)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(hf_config)


def _unique_numel(model: Any) -> int:
    """Checkpoint parameters: the state dict, a tied table counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in model.state_dict().values():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel()
    return total


@pytest.mark.parametrize("make_config", ALL.values(), ids=ALL.keys())
def test_plan_counts_every_checkpoint_parameter(make_config: Callable[[], dict[str, Any]]) -> None:
    config = make_config()
    spec = spec_from_config(config)
    plan = make_plan(spec, PRECISIONS["fp32"])
    model = _model(config)
    assert plan.total_params == _unique_numel(model)
    assert spec.rms_norm_eps == model.config.rms_norm_eps  # family defaults agree


@pytest.mark.parametrize("make_config", ALL.values(), ids=ALL.keys())
def test_layer_shapes_match_transformers(make_config: Callable[[], dict[str, Any]]) -> None:
    config = make_config()
    spec = spec_from_config(config)
    model = _model(config)
    for layer, hf_layer in zip(spec.layers, model.model.layers, strict=True):
        attention, hf_attention = layer.attention, hf_layer.self_attn
        if attention.mla is None:
            assert hf_attention.q_proj.out_features == attention.q_size
            assert hf_attention.k_proj.out_features == attention.kv_size
            assert hf_attention.head_dim == attention.head_dim
            assert getattr(hf_attention, "v_proj", None) is None if attention.k_eq_v else True
        else:
            assert hf_attention.kv_lora_rank == attention.mla.kv_lora_rank
            assert hf_attention.qk_rope_head_dim == attention.mla.rope_dim
        # Mixtral reads its window from the config at call time; the others keep an attribute.
        window = getattr(
            hf_attention, "sliding_window", getattr(hf_attention.config, "sliding_window", None)
        )
        assert window == attention.window
        assert hf_attention.scaling == attention.scale
        state = {
            k.removeprefix(f"model.layers.{layer.index}."): v
            for k, v in hf_layer.state_dict(prefix=f"model.layers.{layer.index}.").items()
        }
        for vector in layer.vectors:
            assert tuple(state[vector.key].shape) == (vector.width,), vector.key
        if layer.moe is not None:
            assert tuple(state[layer.moe.router_key].shape) == (
                layer.moe.num_experts,
                spec.hidden_size,
            )


@pytest.mark.parametrize("make_config", ALL.values(), ids=ALL.keys())
def test_checkpoint_keys_and_shapes_match_transformers(
    make_config: Callable[[], dict[str, Any]],
) -> None:
    config = make_config()
    spec = spec_from_config(config)
    state = _model(config).state_dict()
    if spec.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    assert checkpoint_shapes(spec) == {k: tuple(v.shape) for k, v in state.items()}
