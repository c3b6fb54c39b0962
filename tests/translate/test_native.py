"""subtitled's native expert kernel (`ai.subtitled.SparseExperts`, sparse_experts.c) under
ONNX Runtime: exact against a numpy model of the same arithmetic, close to the float
experts, and clear errors for bad inputs; a model that needs a kernel that was not built
gets an error that says how to build it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from subtitled.errors import ModelError
from subtitled.translate import native

onnx = pytest.importorskip("onnx", reason="the export extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402 - needs onnx

from export.onnx_native import pack, unpack  # noqa: E402 - needs onnx

pytestmark = pytest.mark.skipif(
    native.library_path() is None, reason="the native kernel was not built (no C compiler?)"
)
BLOCK = 32


def _session(bits: int, activation: int, weighted: int, tables: dict[str, np.ndarray]) -> Any:
    node = helper.make_node(
        native.OP,
        ["x", "index", "weight", "gate_up", "gate_up_scales", "down", "down_scales"],
        ["y"],
        domain=native.DOMAIN,
        bits=bits,
        block_size=BLOCK,
        activation=activation,
        weighted=weighted,
    )
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("index", TensorProto.INT64, None),
        helper.make_tensor_value_info("weight", TensorProto.FLOAT, None),
    ]
    graph = helper.make_graph(
        [node],
        "experts",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in tables.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(native.DOMAIN, 1)]
    )
    model.ir_version = 10
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    assert native.register(options)
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _int8_blocks(v: np.ndarray) -> np.ndarray:
    """v as the kernel sees it: int8 per block of 32, scale max|v| / 127."""
    blocks = v.reshape(-1, BLOCK).astype(np.float64)
    peak = np.abs(blocks).max(1, keepdims=True)
    q = np.rint(blocks * np.where(peak > 0, 127 / np.where(peak > 0, peak, 1), 0))
    return (q * (peak / 127)).reshape(v.shape)


def _act(g: np.ndarray, activation: int) -> np.ndarray:
    if activation == 0:
        return g / (1 + np.exp(-g))
    return 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))


def _reference(
    x: np.ndarray,
    index: np.ndarray,
    weight: np.ndarray,
    gate_up: np.ndarray,
    down: np.ndarray,
    activation: int,
    weighted: bool,
    quantise_inputs: bool,
) -> np.ndarray:
    """sum_j weight_j * down_e(act(gate_e(x)) * up_e(x)) in float64."""
    tokens, k = index.shape
    inter = gate_up.shape[1] // 2
    q = _int8_blocks if quantise_inputs else (lambda v: v.astype(np.float64))
    y = np.zeros((tokens, down.shape[1]))
    for n in range(tokens):
        for j in range(k):
            e = index[n, j]
            both = gate_up[e] @ q(x[n, j] if x.ndim == 3 else x[n])
            hidden = _act(both[:inter], activation) * both[inter:]
            y[n] += (weight[n, j] if weighted else 1.0) * (down[e] @ q(hidden))
    return y


def _case(
    bits: int,
    tokens: int,
    activation: int,
    per_slot: bool = False,
    experts: int = 8,
    k: int = 2,
    hidden: int = 64,
    inter: int = 96,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gate_up = rng.standard_normal((experts, 2 * inter, hidden)).astype(np.float32) * 0.2
    down = rng.standard_normal((experts, hidden, inter)).astype(np.float32) * 0.2
    tables: dict[str, np.ndarray] = {}
    tables["gate_up"], tables["gate_up_scales"] = pack(gate_up, bits, BLOCK)
    tables["down"], tables["down_scales"] = pack(down, bits, BLOCK)
    shape = (tokens, k, hidden) if per_slot else (tokens, hidden)
    x = rng.standard_normal(shape).astype(np.float32)
    index = np.stack([rng.choice(experts, k, replace=False) for _ in range(tokens)])
    weight = rng.random((tokens, k)).astype(np.float32)
    return x, index.astype(np.int64), weight, tables


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("activation", [0, 1])
@pytest.mark.parametrize("tokens", [1, 13])
def test_matches_the_same_arithmetic_in_numpy(bits: int, activation: int, tokens: int) -> None:
    """Exact up to float rounding: the selected experts' codes times the inputs quantised
    to int8 per block, scaled per block, the activation, the weighted sum; one token
    (decode) and many (prefill, experts shared by several tokens)."""
    x, index, weight, tables = _case(bits, tokens, activation, seed=bits + tokens)
    y = _session(bits, activation, 1, tables).run(None, {"x": x, "index": index, "weight": weight})
    gate_up = unpack(tables["gate_up"], tables["gate_up_scales"], bits)
    down = unpack(tables["down"], tables["down_scales"], bits)
    expected = _reference(x, index, weight, gate_up, down, activation, True, True)
    assert y[0].shape == expected.shape
    np.testing.assert_allclose(y[0], expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("bits", [8, 4])
def test_inputs_quantised_per_block_cost_little(bits: int) -> None:
    """Against the same weights with float inputs: quantising the inputs (and the hidden
    activations) to int8 per block moves the output by under 3% of its range."""
    rng = np.random.default_rng(1)
    experts, k, hidden, inter, tokens = 4, 2, 64, 64, 5
    gate_up = rng.standard_normal((experts, 2 * inter, hidden)).astype(np.float32) * 0.2
    down = rng.standard_normal((experts, hidden, inter)).astype(np.float32) * 0.2
    tables: dict[str, np.ndarray] = {}
    tables["gate_up"], tables["gate_up_scales"] = pack(gate_up, bits, BLOCK)
    tables["down"], tables["down_scales"] = pack(down, bits, BLOCK)
    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    index = np.array([rng.choice(experts, k, replace=False) for _ in range(tokens)], np.int64)
    weight = rng.random((tokens, k)).astype(np.float32)
    y = _session(bits, 1, 1, tables).run(None, {"x": x, "index": index, "weight": weight})[0]
    gate_up = unpack(tables["gate_up"], tables["gate_up_scales"], bits)
    down = unpack(tables["down"], tables["down_scales"], bits)
    expected = _reference(x, index, weight, gate_up, down, 1, True, False)
    error = np.abs(y - expected).max() / np.abs(expected).max()
    assert error < 0.03, error


def test_one_input_per_slot_summed_unweighted() -> None:
    """Llama 4's form: each slot's input already scaled by its score, a plain sum."""
    x, index, weight, tables = _case(8, 3, 0, per_slot=True, k=3, experts=6)
    y = _session(8, 0, 0, tables).run(None, {"x": x, "index": index, "weight": weight})
    gate_up = unpack(tables["gate_up"], tables["gate_up_scales"], 8)
    down = unpack(tables["down"], tables["down_scales"], 8)
    expected = _reference(x, index, weight, gate_up, down, 0, False, True)
    np.testing.assert_allclose(y[0], expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("per_slot", [False, True])
def test_batch_and_sequence_dimensions_are_tokens(per_slot: bool) -> None:
    """x (B, S, H) or (B, S, k, H) and index (B, S, k), as the exporter hands them over
    without flattening: the same result as the (B * S)-token call, shaped (B, S, H)."""
    x, index, weight, tables = _case(8, 6, 1, per_slot=per_slot, seed=5)
    session = _session(8, 1, 1, tables)
    flat = session.run(None, {"x": x, "index": index, "weight": weight})[0]
    batched = session.run(
        None,
        {
            "x": x.reshape(2, 3, *x.shape[1:]),
            "index": index.reshape(2, 3, -1),
            "weight": weight.reshape(2, 3, -1),
        },
    )[0]
    assert batched.shape == (2, 3, x.shape[-1])
    np.testing.assert_array_equal(batched.reshape(flat.shape), flat)


def test_no_tokens() -> None:
    x, index, weight, tables = _case(8, 1, 0)
    session = _session(8, 0, 1, tables)
    y = session.run(None, {"x": x[:0], "index": index[:0], "weight": weight[:0]})[0]
    assert y.shape == (0, x.shape[1])


def test_pack_layout_at_4_bits() -> None:
    """Byte j of a block holds element j (low nibble) and j + block / 2 (high)."""
    codes = (np.arange(64, dtype=np.uint8) * 7 % 16).reshape(1, 1, 64)  # every code per block
    values = (codes.astype(np.float32) - 8) * 0.5
    packed, scales = pack(values, 4, BLOCK)
    assert packed.shape == (1, 1, 32) and scales.shape == (1, 1, 2)
    for block in range(2):
        for j in range(16):
            low, high = codes[0, 0, 32 * block + j], codes[0, 0, 32 * block + 16 + j]
            assert packed[0, 0, 16 * block + j] == low | (high << 4)
    np.testing.assert_array_equal(unpack(packed, scales, 4), values)


def test_an_expert_out_of_range_is_named() -> None:
    x, index, weight, tables = _case(8, 2, 0, experts=8)
    index[1, 0] = 8
    session = _session(8, 0, 1, tables)
    with pytest.raises(Exception, match=r"SparseExperts: token 1 selects expert 8 of 8"):
        session.run(None, {"x": x, "index": index, "weight": weight})


def test_a_shape_mismatch_is_named() -> None:
    x, index, weight, tables = _case(8, 2, 0)
    session = _session(8, 0, 1, tables)
    expected = r"SparseExperts: x has shape \(2, 32\), expected \(2, 64\)"
    with pytest.raises(Exception, match=expected):
        session.run(None, {"x": x[:, :32].copy(), "index": index, "weight": weight})
    with pytest.raises(Exception, match=r"SparseExperts: weight has shape \(2, 1\)"):
        session.run(None, {"x": x, "index": index, "weight": weight[:, :1].copy()})
    with pytest.raises(Exception, match=r"SparseExperts: x has shape \(1, 2, 64\), expected"):
        session.run(None, {"x": x[None], "index": index, "weight": weight})
    with pytest.raises(Exception, match=r"index must be \(\.\.\., k\) of rank 1 to 3"):
        session.run(None, {"x": x, "index": index[None, None], "weight": weight})


def test_bad_attributes_are_named() -> None:
    _, _, _, tables = _case(8, 1, 0)
    with pytest.raises(Exception, match=r"SparseExperts: bits must be 8 or 4, got 3"):
        _session(3, 0, 1, tables)
    with pytest.raises(Exception, match=r"SparseExperts: activation must be 0"):
        _session(8, 7, 1, tables)


def test_a_model_needing_an_unbuilt_kernel_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    error = RuntimeError("Could not find an implementation for SparseExperts(1) node")
    found = native.missing_kernel_error(tmp_path / "model.onnx", error)
    assert isinstance(found, ModelError)  # built: ONNX Runtime's own words
    monkeypatch.setattr(native, "library_path", lambda: None)
    missing = native.missing_kernel_error(tmp_path / "model.onnx", error)
    assert missing is not None and "not built when subtitled was installed" in str(missing)
    assert "--moe-kernel sparse" in str(missing)
    assert native.missing_kernel_error(tmp_path / "m.onnx", RuntimeError("other")) is None
