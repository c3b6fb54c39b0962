"""Gemma 3 text (`gemma3_text`): the spec read from its config (the transformers 5 keys and
the older ones its released checkpoints carry), the graph, `verify` against transformers at
every precision, and decoding through the runtime's KV cache past the sliding window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import tiny_gemma3

from export.errors import ConfigKeyError, UnsupportedArchitecture
from export.families import spec_from_config
from export.prompts import PROMPTS

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
transformers = pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("onnxruntime", reason="onnxruntime is a runtime dependency")

from export.cli import main  # noqa: E402
from export.model_dir import REFERENCE_DIR, prompt_template  # noqa: E402
from export.restore import restore_into  # noqa: E402
from export.verify import FP32_MAX_DIFF, MIN_COSINE, VerifyReport, verify  # noqa: E402
from subtitled.translate.contract import MODEL_FILE  # noqa: E402
from subtitled.translate.kvcache import KvCache  # noqa: E402
from subtitled.translate.manifest import load_manifest  # noqa: E402
from subtitled.translate.runtime import open_session  # noqa: E402


def _legacy() -> dict[str, Any]:
    """tiny_gemma3() in the keys Gemma 3's released config.json files use (before
    transformers 5): `rope_theta`, `rope_local_base_freq`, `rope_scaling` on full layers,
    `sliding_window_pattern` instead of `layer_types` (every 2nd layer full here)."""
    config = tiny_gemma3()
    del config["rope_parameters"], config["layer_types"]
    return config | {
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 2,
    }


def _export(config: dict[str, Any], root: Path, *args: str) -> Path:
    path = root / "config.json"
    path.write_text(json.dumps(config))
    out = root / "model"
    argv = ["onnx", "--config", str(path), "--random-weights", "--out", str(out), *args]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_gemma3(), tmp_path_factory.mktemp("gemma3_fp32"))


def test_spec_mixes_sliding_and_full_layers_of_one_geometry() -> None:
    spec = spec_from_config(tiny_gemma3())
    kinds = [layer.attention.kind for layer in spec.layers]
    assert kinds == ["sliding", "full", "sliding", "sliding"]  # the last layer stays sliding
    sliding, full = spec.layers[0].attention, spec.layers[1].attention
    for a in (sliding, full):
        assert (a.n_heads, a.n_kv_heads, a.head_dim) == (2, 1, 32)
        assert a.qk_norm == "rms" and not a.v_norm and not a.k_eq_v and a.kv_tensors == 2
        assert a.scale == 16**-0.5  # query_pre_attn_scalar, not head_dim
    assert (sliding.window, full.window) == (8, None)
    assert (sliding.rope.rope_type, sliding.rope.theta) == ("default", 10_000.0)
    assert (full.rope.rope_type, full.rope.theta, full.rope.linear_factor) == (
        "linear",
        1_000_000.0,
        8.0,
    )
    assert spec.norm_offset == 1.0 and spec.embed_scale == 8.0
    assert spec.tie_word_embeddings and spec.final_logit_softcapping is None
    layer = spec.layers[0]
    assert layer.moe is None and layer.mlp is not None
    assert layer.mlp.activation == "gelu_pytorch_tanh"
    assert [v.key for v in layer.vectors] == [
        "input_layernorm.weight",
        "post_attention_layernorm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
    ]
    gemma = prompt_template("gemma3_text", None, "subtitled.json")
    assert gemma == PROMPTS["gemma4_text"] and "<start_of_turn>model" in gemma.source_turn


def test_released_config_keys_give_the_same_spec() -> None:
    legacy = spec_from_config(_legacy())
    config = tiny_gemma3() | {"layer_types": ["sliding_attention", "full_attention"] * 2}
    assert legacy == spec_from_config(config)
    # and without any RoPE keys, Gemma3TextConfig's default bases
    bare = {k: v for k, v in _legacy().items() if not k.startswith("rope")}
    full, sliding = (spec_from_config(bare).layers[i].attention.rope for i in (1, 0))
    assert (full.theta, full.rope_type, sliding.theta) == (1_000_000.0, "default", 10_000.0)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"attn_logit_softcapping": 50.0}, UnsupportedArchitecture, "'attn_logit_softcapping'"),
        ({"use_bidirectional_attention": True}, UnsupportedArchitecture, "bidirectional"),
        ({"attention_bias": True}, UnsupportedArchitecture, "'attention_bias'"),
        ({"query_pre_attn_scalar": 0}, ConfigKeyError, "'query_pre_attn_scalar'"),
        ({"layer_types": ["full_attention"]}, UnsupportedArchitecture, "'layer_types'"),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1e6}}},
            ConfigKeyError,
            r"'rope_parameters\.full_attention\.rope_type' is 'yarn'; allowed: default, linear",
        ),
        (
            {"rope_parameters": {"sliding_attention": {"partial_rotary_factor": 0.5}}},
            UnsupportedArchitecture,
            r"'rope_parameters\.sliding_attention\.partial_rotary_factor'",
        ),
        (
            {"rope_parameters": {"full_attention": {"rope_type": "linear"}}},
            ConfigKeyError,
            r"'rope_parameters\.full_attention\.factor' is missing",
        ),
    ],
)
def test_what_is_not_built_is_named(
    change: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        spec_from_config(tiny_gemma3() | change)


def test_legacy_rope_scaling_type_is_named() -> None:
    config = _legacy() | {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
    with pytest.raises(ConfigKeyError, match=r"'rope_scaling\.rope_type' is 'dynamic'"):
        spec_from_config(config)


def test_graph_runs_every_layer_in_group_query_attention(fp32: Path) -> None:
    """Gemma 3's layers cache K and V with nothing between q/k norms + RoPE and attention:
    every layer is `GroupQueryAttention` with RoPE inside, the sliding ones windowed, q·k
    scaled by `query_pre_attn_scalar` ** -0.5; the sliding and full layers hold their
    lengths in two slots of `cache_lengths`. The norms add 1 to the stored weights."""
    graph = onnx.load(str(fp32 / MODEL_FILE), load_external_data=False).graph
    fused = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert [n.name.split("/")[2] for n in fused] == [f"layers.{i}" for i in range(4)]
    windows = []
    for node in fused:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["do_rotary"] == 1 and attrs["scale"] == pytest.approx(0.25)
        assert (attrs["num_heads"], attrs["kv_num_heads"]) == (2, 1)
        windows.append(attrs["local_window_size"])
    assert windows == [8, -1, 8, 8]
    names = {n.name for n in graph.node}
    assert "/model/layers.0/input_layernorm/WeightOffset" in names
    assert "/model/layers.3/self_attn/k_norm/WeightOffset" in names
    assert "/model/norm/WeightOffset" in names
    assert not [n for n in names if "v_norm" in n or "layer_scalar" in n]
    manifest = load_manifest(fp32)
    assert manifest.architecture == "gemma3_text"
    assert {kv.layer: kv.length_slot for kv in manifest.kv_layout} == {0: 0, 1: 1, 2: 0, 3: 0}


def _figures(report: VerifyReport) -> str:
    return (
        f"max |dlogit| {report.max_abs_logit_diff:.3g}, cosine {report.mean_cosine:.5f} "
        f"(min {report.min_cosine:.5f}), top-1 {report.top1_agreement:.3f}"
    )


def test_fp32_verifies_past_the_window(fp32: Path) -> None:
    """A 24-token prompt and 64 greedy steps: the 8-token window slides on every sliding
    layer, the full layer's linear RoPE runs to position 87."""
    report = verify(fp32)
    assert report.max_abs_logit_diff <= FP32_MAX_DIFF, _figures(report)
    assert report.tokens_identical and report.passed, _figures(report)


def test_released_config_keys_verify(tmp_path: Path) -> None:
    """The older keys, read by our reader and by transformers' own conversion, give the
    same model."""
    report = verify(_export(_legacy(), tmp_path))
    assert report.passed, _figures(report)


def test_softcapped_logits_and_append_cache_verify(tmp_path: Path) -> None:
    """`final_logit_softcapping` (Gemma 2's, None in Gemma 3's checkpoints), exported with
    `--kv-cache append`: the runtime's append path for sliding GQA layers."""
    config = tiny_gemma3() | {"final_logit_softcapping": 3.0}
    out = _export(config, tmp_path, "--kv-cache", "append")
    assert all(kv.length_slot is None for kv in load_manifest(out).kv_layout)
    report = verify(out)
    assert report.passed, _figures(report)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_pass_verify(precision: str, tmp_path: Path) -> None:
    report = verify(_export(tiny_gemma3(), tmp_path, "--precision", precision))
    assert report.mean_cosine >= MIN_COSINE and report.passed, _figures(report)
    assert report.top1_agreement >= 0.95, _figures(report)


def test_int4_is_as_close_as_its_weights_allow(tmp_path: Path) -> None:
    """int4 on a tiny random model falls below verify's 0.99 (README "Precisions": the
    weights' own rounding, which a trained model tolerates better); against the values its
    int4 weights stand for (restored into the transformers model) the graph passes."""
    out = _export(tiny_gemma3(), tmp_path, "--precision", "int4")
    report = verify(out)
    assert report.mean_cosine >= 0.95 and report.top1_agreement >= 0.9, _figures(report)
    model = transformers.AutoModelForCausalLM.from_pretrained(out / REFERENCE_DIR)
    restore_into(model, tiny_gemma3(), out)
    model.save_pretrained(tmp_path / "int4_values")
    rounded = verify(out, reference=tmp_path / "int4_values")
    assert rounded.mean_cosine >= 0.999 and rounded.top1_agreement == 1.0, _figures(rounded)


def test_kv_cache_compacts_and_rolls_back_like_recomputing(fp32: Path) -> None:
    """The runtime's cache (`subtitled.translate.kvcache`) with a reserve of 4 tokens over
    the 8-token window: the sliding layers' shared buffer is compacted every few tokens,
    and every step's logits are those of the whole sequence run from scratch; a rollback
    within the reserve stays exact."""
    manifest = load_manifest(fp32)
    session = open_session(fp32 / MODEL_FILE, threads=1)

    def cache() -> KvCache:
        return KvCache(session, manifest.kv_layout, reserve_tokens=4)

    def scratch(ids: list[int]) -> np.ndarray:
        logits: np.ndarray = cache().forward(ids)[-1]
        return logits

    tokens = [int(t) for t in np.random.default_rng(5).integers(0, 384, 40)]
    incremental = cache()
    incremental.forward(tokens[:6])
    for n in range(6, 40):
        logits = incremental.forward([tokens[n]])[-1]
        np.testing.assert_allclose(logits, scratch(tokens[: n + 1]), rtol=0, atol=1e-4)
    sliding = incremental.slots[0]  # compacted: window + reserve, + a slack of 16
    assert sliding.capacity <= 8 + 4 + 16 and sliding.held < 40
    assert incremental.slots[1].held == 40  # the full layer keeps every token
    incremental.rollback(37)
    logits = incremental.forward([7, 8])[-1]
    np.testing.assert_allclose(logits, scratch([*tokens[:37], 7, 8]), rtol=0, atol=1e-4)
