"""Block quantisation (numpy) against ONNX Runtime's MatMulNBits and GatherBlockQuantized,
and the sidecar / prompt template readers: pure functions, table-driven."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.errors import ConfigKeyError
from export.model_dir import prompt_template, read_sidecar
from export.quantize import block_size_for, dequantize, quantize

onnx = pytest.importorskip("onnx", reason="the export extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is a runtime dependency")


@pytest.mark.parametrize(("bits", "limit"), [(8, 0.007), (4, 0.1)])
def test_round_trip_error(bits: int, limit: float) -> None:
    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    q = quantize(w, bits, 32)
    assert q.codes.shape == (64, 128 * bits // 8) and q.scales.shape == (64, 4)
    assert np.linalg.norm(dequantize(q) - w) / np.linalg.norm(w) < limit


@pytest.mark.parametrize(("columns", "block"), [(128, 32), (48, 16), (24, None), (40, None)])
def test_block_size(columns: int, block: int | None) -> None:
    assert block_size_for(columns, 32) == block


def _run(node: object, inputs: dict[str, np.ndarray], initializers: list[object]) -> np.ndarray:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node],
        "t",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for name, v in inputs.items()
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 10
    session = onnxruntime.InferenceSession(model.SerializeToString())
    result: np.ndarray = session.run(None, inputs)[0]
    return result


@pytest.mark.parametrize("bits", [4, 8])
def test_layout_is_what_onnx_runtime_reads(bits: int) -> None:
    from onnx import helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    q = quantize(w, bits, 32)
    node = helper.make_node(
        "MatMulNBits",
        ["x", "B", "s"],
        ["y"],
        domain="com.microsoft",
        K=64,
        N=16,
        bits=bits,
        block_size=32,
    )
    blocks = numpy_helper.from_array(q.codes.reshape(16, 2, 32 * bits // 8), "B")
    y = _run(node, {"x": x}, [blocks, numpy_helper.from_array(q.scales.reshape(-1), "s")])
    np.testing.assert_allclose(y, x @ dequantize(q).T, atol=1e-4)
    node = helper.make_node(
        "GatherBlockQuantized",
        ["B", "i", "s"],
        ["y"],
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=32,
        bits=bits,
    )
    ids = np.array([[3, 0, 15]], np.int64)
    rows = _run(
        node,
        {"i": ids},
        [numpy_helper.from_array(q.codes, "B"), numpy_helper.from_array(q.scales, "s")],
    )
    np.testing.assert_array_equal(rows, dequantize(q)[ids])


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ({"licence": 3}, "key 'licence' must be str"),
        ({"name": "x", "owner": "y"}, "unknown key 'owner'"),
        ({"max_positions": True}, "key 'max_positions' must be int"),
    ],
)
def test_bad_sidecar_names_the_key(
    tmp_path: Path, sidecar: dict[str, object], message: str
) -> None:
    (tmp_path / "subtitled.json").write_text(json.dumps(sidecar))
    with pytest.raises(ConfigKeyError, match=message):
        read_sidecar(tmp_path)


def test_prompt_defaults_per_family_and_overrides() -> None:
    gemma = prompt_template("gemma4_text", None, "s")
    assert gemma is not None and gemma.stop == ("<end_of_turn>", "<eos>")
    chatml = prompt_template("qwen3_moe", {"languages": {"fr": "French"}}, "s")
    assert chatml is not None and chatml.turn("Hi", "fr").startswith(
        "<|im_start|>user\nTranslate into French:\nHi"
    )
    with pytest.raises(ConfigKeyError, match="must contain"):
        prompt_template("gemma4_text", {"source_turn": "no placeholder"}, "s")
    with pytest.raises(ConfigKeyError, match="unknown"):
        prompt_template("gemma4_text", {"system": "x"}, "s")
    with pytest.raises(ConfigKeyError, match="prompt keys missing"):
        prompt_template("unknown_family", {"source_turn": "{source}"}, "s")
