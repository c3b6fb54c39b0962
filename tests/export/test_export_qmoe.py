"""The fused `QMoE` path: its weight layout and routing against a numpy Qwen3-MoE block,
and which MoE blocks take it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.plan import PRECISIONS
from export.quantize import dequantize, quantize
from export.spec import MoeSpec

onnx = pytest.importorskip("onnx", reason="the export extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime")

from export.onnx_ops import OPSET, Graph  # noqa: E402 - needs onnx
from export.onnx_qmoe import fused_experts, qmoe_fits  # noqa: E402 - needs onnx

E, H, INTER, K, N = 8, 64, 32, 2, 7
MOE = MoeSpec(E, K, INTER, "silu", True, "gate.weight", "experts")


def _model(bits: int, tables: dict[str, np.ndarray]) -> bytes:
    from onnx import TensorProto, helper

    g = Graph(tables.__getitem__, {k: v.shape for k, v in tables.items()}, PRECISIONS[f"int{bits}"])
    y = fused_experts(g, MOE, "x", "logits", "/model/layers.0/mlp/experts")
    graph = helper.make_graph(
        g.nodes,
        "qmoe",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, H]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, E]),
        ],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [None, H])],
        list(g.initializers.values()),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
    )
    return bytes(model.SerializeToString())


def _reference(
    x: np.ndarray, logits: np.ndarray, gate_up: np.ndarray, down: np.ndarray
) -> np.ndarray:
    """transformers `Qwen3MoeSparseMoeBlock` with `norm_topk_prob`."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.zeros_like(x)
    for n in range(len(x)):
        top = np.argsort(-probs[n])[:K]
        weights = probs[n, top] / probs[n, top].sum()
        for e, w in zip(top, weights, strict=True):
            h = gate_up[e] @ x[n]
            gate, up = h[:INTER], h[INTER:]
            out[n] += w * (down[e] @ (gate / (1 + np.exp(-gate)) * up))
    return out


@pytest.mark.parametrize("bits", [8, 4])
def test_qmoe_computes_the_qwen3_moe_block(bits: int) -> None:
    rng = np.random.default_rng(bits)
    key = "model.layers.0.mlp.experts"
    gate_up = rng.standard_normal((E, 2 * INTER, H)).astype(np.float32) * 0.2
    down = rng.standard_normal((E, H, INTER)).astype(np.float32) * 0.2
    x = rng.standard_normal((N, H)).astype(np.float32)
    logits = rng.standard_normal((N, E)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        _model(bits, {f"{key}.gate_up_proj": gate_up, f"{key}.down_proj": down}),
        providers=["CPUExecutionProvider"],
    )
    (got,) = session.run(None, {"x": x, "logits": logits})
    # the same weights as the codes stand for: row scales at 8 bits, blocks of 32 at 4
    block = 32 if bits == 4 else None
    q_gate_up = dequantize(quantize(gate_up, bits, block or H))
    q_down = dequantize(quantize(down, bits, block or INTER))
    expected = _reference(x, logits, q_gate_up, q_down)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # and close to the float block (the quantisation error only)
    exact = _reference(x, logits, gate_up, down)
    error = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert error < (0.02 if bits == 8 else 0.2), error


def test_which_blocks_take_the_fused_kernel() -> None:
    g8 = Graph(lambda key: np.zeros(1), {}, PRECISIONS["int8"])
    assert qmoe_fits(g8, MOE, H)
    for variant in (
        MoeSpec(E, K, INTER, "gelu_pytorch_tanh", True, "r", "e"),  # Gemma 4: GELU gating
        MoeSpec(E, K, INTER, "silu", False, "r", "e"),  # no renormalisation
        MoeSpec(E, K, INTER, "silu", True, "r", "e", scoring="sigmoid"),  # Llama 4, DeepSeek
        MoeSpec(E, K, INTER, "silu", True, "r", "e", weights_on_input=True),
        MoeSpec(E, K, INTER, "silu", True, "r", "e", groups=4, top_groups=2),
    ):
        assert not qmoe_fits(g8, variant, H), variant
    assert not qmoe_fits(Graph(lambda key: np.zeros(1), {}, PRECISIONS["fp32"]), MOE, H)
    g4 = Graph(lambda key: np.zeros(1), {}, PRECISIONS["int4"])
    assert qmoe_fits(g4, MOE, H)
    assert not qmoe_fits(g4, MoeSpec(E, K, 24, "silu", True, "r", "e"), H)  # no 4-bit blocks


def test_mixtral_int8_exports_through_qmoe_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: a tiny random Mixtral at int8 runs its experts in `QMoE` (one node per
    layer, no gathered expert tables) and stays within the int8 bar of the fp32 reference."""
    pytest.importorskip("torch", reason="the export extra is not installed")
    from export_configs import ALL

    from export.cli import main
    from subtitled.translate.contract import MODEL_FILE

    config = ALL["mixtral"]()
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "int8"
    assert (
        main(
            [
                "onnx",
                "--config",
                str(tmp_path / "config.json"),
                "--random-weights",
                "--out",
                str(out),
                "--precision",
                "int8",
            ]
        )
        == 0
    )
    nodes = onnx.load(str(out / MODEL_FILE), load_external_data=False).graph.node
    assert sum(n.op_type == "QMoE" for n in nodes) == config["num_hidden_layers"]
    assert not any(n.op_type == "MatMulInteger" for n in nodes)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "verify: passed" in capsys.readouterr().out


def test_moe_kernel_sparse_keeps_the_gather_path(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the export extra is not installed")
    from export_configs import ALL

    from export.cli import main
    from subtitled.translate.contract import MODEL_FILE

    (tmp_path / "config.json").write_text(json.dumps(ALL["mixtral"]()))
    out = tmp_path / "sparse"
    assert main(["onnx", "--config", str(tmp_path / "config.json"), "--random-weights",
                 "--out", str(out), "--precision", "int8", "--moe-kernel", "sparse"]) == 0
    nodes = onnx.load(str(out / MODEL_FILE), load_external_data=False).graph.node
    assert not any(n.op_type == "QMoE" for n in nodes)
    assert any(n.op_type == "MatMulInteger" for n in nodes)
