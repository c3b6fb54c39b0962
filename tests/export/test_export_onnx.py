"""ONNX export of tiny random models of every family, verified against transformers; graph
structure (sparse MoE, KV-cache layout, checkpoint node names) and errors naming what is
wrong."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import ALL, tiny_deepseek_r1, tiny_gemma4, tiny_qwen3_yarn

from export.cli import main
from export.errors import ExportError, UnsupportedArchitecture
from export.families import READERS, spec_from_config

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is a runtime dependency")

from export.onnx_graph import LAYER_BUILDERS, build_model  # noqa: E402 - needs onnx
from export.reference import random_model  # noqa: E402 - needs torch
from subtitled.translate.contract import MODEL_FILE  # noqa: E402
from subtitled.translate.manifest import load_manifest  # noqa: E402


def _export(config: dict[str, Any], root: Path) -> Path:
    path = root / "config.json"
    path.write_text(json.dumps(config))
    out = root / "model"
    assert main(["onnx", "--config", str(path), "--random-weights", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_gemma4(), tmp_path_factory.mktemp("tiny_gemma4"))


def test_verify_gemma4_prefill_and_64_greedy_steps(
    exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(exported)]) == 0
    out = capsys.readouterr().out
    assert "greedy tokens identical: yes" in out and "verify: passed" in out


@pytest.mark.parametrize("family", [f for f in ALL if f != "gemma4_text"])
def test_verify_other_families(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(_export(ALL[family](), tmp_path))]) == 0
    assert "verify: passed" in capsys.readouterr().out


@pytest.mark.parametrize("config", [tiny_deepseek_r1, tiny_qwen3_yarn])
def test_yarn_rope_matches_transformers(
    config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YaRN frequencies, cos/sin attention factor and DeepSeek's mscale^2 softmax scale,
    over positions past the original context; the same model checked against a reference
    without YaRN fails, so the comparison sees the scaling."""
    out = _export(config(), tmp_path)
    assert main(["verify", str(out)]) == 0
    assert "verify: passed" in capsys.readouterr().out
    plain = Path(shutil.copytree(out / "reference", tmp_path / "plain"))
    settings = json.loads((plain / "config.json").read_text())
    theta = settings["rope_parameters"]["rope_theta"]
    settings["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    (plain / "config.json").write_text(json.dumps(settings))
    assert main(["verify", str(out), "--reference", str(plain)]) == 1
    assert "verify: FAILED" in capsys.readouterr().out


def test_every_family_read_has_a_layer_builder() -> None:
    assert set(READERS) == set(LAYER_BUILDERS)


def test_moe_multiplies_only_gathered_experts(exported: Path) -> None:
    graph = onnx.load(str(exported / MODEL_FILE)).graph
    expert_tables = {i.name for i in graph.initializer if ".experts." in i.name}
    assert expert_tables  # gate_up_proj and down_proj of every layer
    producers = {out: node for node in graph.node for out in node.output}
    gathers = {"Gather", "GatherBlockQuantized"}
    for node in graph.node:
        used = expert_tables.intersection(node.input)
        assert not used or node.op_type in gathers, (node.name, used)
        if "/experts/" in node.name and node.op_type == "MatMul":
            weights = producers[node.input[0]]
            if weights.op_type == "Cast":  # fp16 rows widened after the gather
                weights = producers[weights.input[0]]
            assert weights.op_type in gathers, node.name


def test_node_and_initializer_names_follow_checkpoint_keys(exported: Path) -> None:
    graph = onnx.load(str(exported / MODEL_FILE)).graph
    names = {node.name for node in graph.node}
    assert "/model/layers.0/self_attn/q_proj/MatMul" in names
    assert "/model/layers.1/experts/gate_up_proj/Gather" in names
    initializers = {i.name for i in graph.initializer}
    assert "model.layers.0.self_attn.v_proj.weight" in initializers
    assert "model.layers.1.self_attn.v_proj.weight" not in initializers  # K=V layer


def test_rope_inside_group_query_attention_where_nothing_sits_between(exported: Path) -> None:
    """Gemma 4's sliding layers (q/k norms, then RoPE, then attention) hand RoPE to
    `GroupQueryAttention` (the query tokens' own cos/sin rows, token i reading row i), so no
    RoPE nodes remain there; its K=V full layers apply RoPE in standard ops to the new
    tokens' q and k, then attend in the op with K cached beside V. verify (above)
    checks the numbers past the 16-token window."""
    graph = onnx.load(str(exported / MODEL_FILE)).graph
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert [n.name.split("/")[2] for n in gqa] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    for node in gqa:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.name.startswith(("/model/layers.0/", "/model/layers.2/")):  # sliding
            assert attrs["do_rotary"] == 1 and attrs["local_window_size"] == 16
            assert len(node.input) == 10  # + cos_cache, sin_cache, position_ids
        else:  # full, K=V: proportional RoPE on the new tokens' q and k, before the op
            assert "do_rotary" not in attrs and attrs["local_window_size"] == -1
            assert len(node.input) == 7
    names = {node.name for node in graph.node}
    assert not [n for n in names if n.startswith("/model/layers.0/self_attn/q_rope")]
    assert "/model/layers.1/self_attn/q_rope/Rotate" in names


def test_positions_need_not_be_consecutive(tmp_path: Path) -> None:
    """RoPE inside GroupQueryAttention reads row i of the call's own cos/sin table for
    token i, so any positions (here every third) match transformers, as RoPE in standard
    ops did."""
    import torch
    import transformers

    out = _export(ALL["qwen3_moe"](), tmp_path)  # head_dim 16: RoPE inside the op
    nodes = onnx.load(str(out / MODEL_FILE), load_external_data=False).graph.node
    assert any(n.op_type == "GroupQueryAttention" and len(n.input) == 10 for n in nodes)
    session = onnxruntime.InferenceSession(str(out / MODEL_FILE))
    ids = np.arange(3, 14, dtype=np.int64)[None, :]
    positions = 3 * np.arange(11, dtype=np.int64)[None, :] + 5
    feeds = _empty_feeds(session)
    logits = session.run(["logits"], {**feeds, "input_ids": ids, "position_ids": positions})[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "reference")
    with torch.no_grad():
        expected = model(
            input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(positions)
        ).logits.numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3)


def _empty_feeds(session: Any) -> dict[str, Any]:
    """Empty past caches (and zero held lengths) for every cache input of `session`."""
    feeds: dict[str, Any] = {
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past_")
    }
    for i in session.get_inputs():
        if i.name == "cache_lengths":
            feeds[i.name] = np.zeros(i.shape, np.int64)
        if i.name == "logits_rows":  # more than any sequence: every row's logits
            feeds[i.name] = np.array([1 << 30], np.int64)
    return feeds


def test_kv_cache_layout_window_and_k_eq_v(exported: Path) -> None:
    layout = {kv.layer: kv for kv in load_manifest(exported).kv_layout}
    assert layout[0].window == 16 and layout[0].length_slot == 0  # sliding GQA: shared buffer
    # K=V: K cached beside V in a shared buffer of its own (full attention's slot)
    assert layout[1].tensors == ("key", "value") and layout[1].length_slot == 1
    session = onnxruntime.InferenceSession(str(exported / MODEL_FILE))
    inputs = {i.name for i in session.get_inputs()}
    assert {"past_key_values.0.key", "past_key_values.0.value", "cache_lengths"} <= inputs
    assert {"past_key_values.1.value", "past_key_values.1.key"} <= inputs
    feeds = _empty_feeds(session)
    feeds["input_ids"] = np.arange(24, dtype=np.int64)[None, :]
    feeds["position_ids"] = np.arange(24, dtype=np.int64)[None, :]
    outputs = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
    )
    assert outputs["logits"].shape == (1, 24, 512)
    # the shared buffer returns every token (the op masks by the window) ...
    assert outputs["present.0.key"].shape == (1, 2, 24, 16)
    assert outputs["present.1.key"].shape == (1, 1, 24, 32)  # full, K=V: K and V


def test_append_cache_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--kv-cache append`: no shared buffers, no `cache_lengths`; a sliding layer's present
    is its last `window` tokens; verify (through the runtime's append path) passes."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_gemma4()))
    out = tmp_path / "model"
    args = ["onnx", "--config", str(path), "--random-weights", "--out", str(out)]
    assert main([*args, "--kv-cache", "append"]) == 0
    layout = load_manifest(out).kv_layout
    assert all(kv.length_slot is None for kv in layout)
    assert layout[1].tensors == ("value",)  # K=V: V only, K rebuilt from it
    session = onnxruntime.InferenceSession(str(out / MODEL_FILE))
    assert "cache_lengths" not in {i.name for i in session.get_inputs()}
    feeds = _empty_feeds(session)
    feeds["input_ids"] = np.arange(24, dtype=np.int64)[None, :]
    feeds["position_ids"] = np.arange(24, dtype=np.int64)[None, :]
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds), strict=True))
    assert outputs["present.0.key"].shape == (1, 2, 16, 16)  # sliding: the last 16 tokens
    assert main(["verify", str(out)]) == 0
    assert "verify: passed" in capsys.readouterr().out


def test_shared_buffer_is_written_in_place(exported: Path) -> None:
    """GroupQueryAttention layers bound to one buffer as past and present: a call writes
    its tokens after the held ones and nothing else, and its logits are those of a call
    given the exact past (an append run)."""
    manifest = load_manifest(exported)
    session = onnxruntime.InferenceSession(str(exported / MODEL_FILE))
    ids = np.arange(3, 23, dtype=np.int64)[None, :]
    positions = np.arange(20, dtype=np.int64)[None, :]
    names = [o.name for o in session.get_outputs()]
    first = dict(
        zip(
            names,
            session.run(
                None,
                {
                    **_empty_feeds(session),
                    "input_ids": ids[:, :12],
                    "position_ids": positions[:, :12],
                },
            ),
            strict=True,
        )
    )
    past = {n.replace("present.", "past_key_values."): v for n, v in first.items() if n != "logits"}
    slots = {kv.length_slot for kv in manifest.kv_layout} - {None}
    lengths = np.full(len(slots), 12, np.int64)
    tail = {
        "input_ids": ids[:, 12:],
        "position_ids": positions[:, 12:],
        "cache_lengths": lengths,
        "logits_rows": np.array([ids.shape[1] - 12], np.int64),
    }
    expected = dict(zip(names, session.run(None, {**past, **tail}), strict=True))

    binding = session.io_binding()
    buffers = {}
    for kv in manifest.kv_layout:
        for t in kv.tensors:
            name = f"past_key_values.{kv.layer}.{t}"
            if kv.length_slot is None:
                binding.bind_cpu_input(name, past[name])
                continue
            buffer = np.full((1, kv.n_kv_heads, 40, kv.head_dim), 7.0, np.float32)
            buffer[:, :, :12] = past[name]
            buffers[name] = buffer
            value = onnxruntime.OrtValue.ortvalue_from_numpy(buffer)
            binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(f"present.{kv.layer}.{t}", value)
    assert buffers, "the model must have shared-buffer layers"
    for name, value in tail.items():
        binding.bind_cpu_input(name, value)
    binding.bind_output("logits")
    session.run_with_iobinding(binding)
    logits = binding.get_outputs()[-1].numpy()
    np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=1e-5)
    for name, buffer in buffers.items():
        present = expected[name.replace("past_key_values.", "present.")]
        np.testing.assert_allclose(buffer[:, :, :20], present, rtol=0, atol=1e-6)
        assert (buffer[:, :, 20:] == 7.0).all(), f"{name}: written beyond the new tokens"


def test_missing_tensor_is_named() -> None:
    spec = spec_from_config(tiny_gemma4())
    state = {k: v.numpy() for k, v in random_model(tiny_gemma4()).state_dict().items()}
    del state["model.layers.2.experts.down_proj"]

    def weights(key: str) -> Any:
        if key not in state:
            raise ExportError(f"checkpoint tensor {key!r} is missing")
        return state[key]

    with pytest.raises(ExportError, match=r"'model\.layers\.2\.experts\.down_proj' is missing"):
        build_model(spec, weights)


def test_shape_mismatch_is_named() -> None:
    spec = spec_from_config(tiny_gemma4())
    state = {k: v.numpy() for k, v in random_model(tiny_gemma4()).state_dict().items()}
    state["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    with pytest.raises(
        ExportError,
        match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has "
        r"shape \(16, 64\), the config implies \(32, 64\)",
    ):
        build_model(spec, state.__getitem__)


def test_architecture_without_onnx_builder_is_named() -> None:
    spec = dataclasses.replace(spec_from_config(tiny_gemma4()), model_type="gpt_oss")
    with pytest.raises(UnsupportedArchitecture, match="'gpt_oss' is not built yet"):
        build_model(spec, lambda key: np.zeros(1))


def test_bench_prints_the_three_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "--layers",
        "1",
        "--hidden",
        "64",
        "--experts",
        "4",
        "--expert-intermediate",
        "32",
        "--decode-tokens",
        "2",
        "--prefill-tokens",
        "8",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dense, same total" in out and "torch eager fp32" in out
    assert "ONNX vs PyTorch eager" in out and "dense with same active" in out
    # every experts' kernel, side by side
    for kernel in ("native", "qmoe", "sparse"):
        assert f"MoE as `onnx int8 {kernel}`" in out
