"""Gemma 4 as GGUF: written by `export.gguf_write` from a seeded transformers model (Gemma 4
26B-A4B's shape family shrunk: sliding and full layers of different head sizes, K=V on the
full ones, proportional RoPE, 8 experts top-2 beside the dense MLP), read back through
`export.gguf_file` and exported to ONNX, and run by llama.cpp where llama-cpp-python is
installed (it is not a dependency: that test skips without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import tiny_gemma4

REASON = "the export extra is not installed: pip install -e '.[export]'"
gguf = pytest.importorskip("gguf", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from gguf_writer import assert_llama_cpp_matches  # noqa: E402

from export import gguf_config, gguf_file, gguf_write, quantize  # noqa: E402
from export.checkpoint import checkpoint_shapes  # noqa: E402
from export.cli import main  # noqa: E402
from export.errors import ConfigKeyError, ExportError, UnsupportedArchitecture  # noqa: E402
from export.families import spec_from_config  # noqa: E402
from export.reference import random_model, weights_of  # noqa: E402
from export.verify import verify  # noqa: E402

CONFIG = tiny_gemma4()
LICENCE = "MIT (random weights)"
DECODE_STEPS = 8  # verify's greedy steps: enough to cross the 16-token sliding window


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight"),
        ("blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
        ("blk.0.pre_ffw_norm_2.weight", "model.layers.0.pre_feedforward_layernorm_2.weight"),
        ("blk.0.post_ffw_norm_1.weight", "model.layers.0.post_feedforward_layernorm_1.weight"),
        ("blk.2.ffn_gate_inp.weight", "model.layers.2.router.proj.weight"),
        ("blk.2.ffn_gate_inp.scale", "model.layers.2.router.scale"),
        ("blk.2.ffn_down_exps.scale", "model.layers.2.router.per_expert_scale"),
        ("blk.2.ffn_gate_up_exps.weight", "model.layers.2.experts.gate_up_proj"),
        ("blk.2.ffn_down_exps.weight", "model.layers.2.experts.down_proj"),
        ("blk.3.layer_output_scale.weight", "model.layers.3.layer_scalar"),
    ],
)
def test_llama_cpp_names_map_both_ways(name: str, key: str) -> None:
    """llama.cpp's names (`conversion/gemma.py` Gemma4Model, `tensor_mapping.py`)."""
    names = gguf_file.TENSOR_NAMES["gemma4"]
    assert gguf_file.hf_key(name, names) == key
    assert gguf_file.gguf_name(key, names) == name


@pytest.fixture(scope="module")
def model() -> Any:
    return random_model(CONFIG)


@pytest.fixture(scope="module")
def written(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `reference/` (the transformers model) and `model.gguf` (F32)."""
    root = tmp_path_factory.mktemp("gemma4")
    model.save_pretrained(root / "reference")
    gguf_write.write_gguf(CONFIG, weights_of(model), root / "model.gguf", "F32", licence=LICENCE)
    return root


def test_the_file_reads_back_as_the_config_and_tensors_it_was_written_from(
    model: Any, written: Path
) -> None:
    file = gguf_file.GgufFile(written / "model.gguf")
    assert file.architecture == "gemma4" and file.unmapped == []
    assert spec_from_config(gguf_config.hf_config(file)) == spec_from_config(CONFIG)
    weights, original = gguf_file.GgufWeights(file), weights_of(model)
    for key in checkpoint_shapes(spec_from_config(CONFIG)):
        np.testing.assert_array_equal(weights(key), original(key), err_msg=key)
    # the full layers' proportional RoPE: 32 / 2 frequencies, a quarter of the head rotating
    factors = file.config_tensor(gguf_config.ROPE_FREQS)
    assert factors is not None
    np.testing.assert_array_equal(factors, np.array([1.0] * 4 + [1e30] * 12, np.float32))


def test_transformers_reads_the_names_it_knows_as_we_wrote_them(
    model: Any, written: Path
) -> None:
    """An independent reader of llama.cpp's names: transformers' GGUF loader maps the
    attention, MLP, norm and router-matrix tensors (not yet the expert tables, the router
    and per-expert scales or the layer scalar) to the same values."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    loaded = load_gguf_checkpoint(
        str(written / "model.gguf"), return_tensors=True, model_to_load=model
    )["tensors"]
    state = model.state_dict()
    for key, tensor in loaded.items():
        np.testing.assert_array_equal(np.asarray(tensor), state[key].numpy(), err_msg=key)
    known = [k for k in state if any(p in k for p in ("self_attn.", "mlp.", "norm", "proj.w"))]
    assert len(known) > 50 and not set(known) - set(loaded)


def test_other_converters_files_read_too(tmp_path: Path) -> None:
    """Ollama's Gemma 4 blobs carry the vision and audio towers (`v.*`, `a.*`, `mm.*`):
    left out, not refused. Older converters wrote the experts' gate and up apart: fused
    on read, gate rows first."""
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma4")
    spec = spec_from_config(CONFIG)
    vocab = gguf_write.synthetic_vocab(spec.vocab_size)
    gguf_write.write_metadata(writer, spec, vocab, "F32", "other", LICENCE)
    rng = np.random.default_rng(0)
    gate, up = (rng.standard_normal((8, 32, 64)).astype(np.float32) for _ in range(2))
    writer.add_tensor("blk.0.ffn_gate_exps.weight", gate)
    writer.add_tensor("blk.0.ffn_up_exps.weight", up)
    for name in ("v.blk.0.attn_q.weight", "a.blk.0.attn_q.weight", "mm.input_projection.weight"):
        writer.add_tensor(name, np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    file = gguf_file.GgufFile(path)
    assert file.unmapped == []
    assert file.tensor_keys() == [
        "model.layers.0.experts.gate_proj.weight",
        "model.layers.0.experts.up_proj.weight",
    ]
    fused = gguf_file.GgufWeights(file)("model.layers.0.experts.gate_up_proj")
    np.testing.assert_array_equal(fused, np.concatenate([gate, up], axis=1))


def test_an_f32_file_exports_and_matches_transformers(
    written: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fp32"
    assert main(["onnx", "--model", str(written / "model.gguf"), "--out", str(out)]) == 0
    report = verify(out, written / "reference", decode_steps=DECODE_STEPS)
    assert report.passed and report.tokens_identical, report
    assert report.max_abs_logit_diff < 1e-4


@pytest.mark.parametrize(("qtype", "precision"), [("Q8_0", "int8"), ("Q4_0", "int4")])
def test_quantised_blocks_carry_over(
    model: Any, qtype: str, precision: str, tmp_path: Path
) -> None:
    """A Q8_0 / Q4_0 file at int8 / int4: every matrix in ggml's blocks (the router
    F32), each block requantised by `export.quantize` to itself, and verify passes
    against a transformers model holding the file's dequantised weights."""
    path = tmp_path / "model.gguf"
    gguf_write.write_gguf(CONFIG, weights_of(model), path, qtype, licence=LICENCE)
    file = gguf_file.GgufFile(path)
    weights = gguf_file.GgufWeights(file)
    for key in ("model.layers.1.self_attn.k_proj.weight", "model.layers.0.experts.down_proj"):
        assert file.type_of(key) == qtype
        values = weights(key)
        again = quantize.dequantize(quantize.quantize(values, 4 if qtype == "Q4_0" else 8, 32))
        np.testing.assert_array_equal(again, values, err_msg=key)
    assert file.type_of("model.layers.0.router.proj.weight") == "F32"
    assert file.type_of("model.layers.0.router.per_expert_scale") == "F32"
    dequantised = random_model(CONFIG)
    tied = {"lm_head.weight": "model.embed_tokens.weight"}
    dequantised.load_state_dict(
        {k: torch.from_numpy(weights(tied.get(k, k)).copy()) for k in dequantised.state_dict()}
    )
    dequantised.save_pretrained(tmp_path / "dequantised")
    out = tmp_path / precision
    args = ["onnx", "--model", str(path), "--out", str(out), "--precision", precision]
    assert main(args) == 0
    report = verify(out, tmp_path / "dequantised", decode_steps=DECODE_STEPS)
    assert report.passed, report


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0"])
def test_the_quantisers_write_ggml_reference_bytes(qtype: str) -> None:
    """Byte for byte what ggml's reference quantisers write (the `gguf` package's copies of
    `quantize_row_q4_0_ref` / `quantize_row_q8_0_ref`): an all-zero block, ties of
    rounding (a block whose scale is exactly 1), more blocks than one chunk."""
    rng = np.random.default_rng(1)
    rows = gguf_write._CHUNK_BLOCKS // 2 + 7  # two blocks a row: over two chunks
    weight = rng.standard_normal((2, rows, 64)).astype(np.float32)
    weight[0, 0, :32] = 0.0
    weight[0, 1, :32] = np.arange(32) - 15.5  # halves
    weight[0, 1, 0] = 127.0  # Q8_0 scale 1: every half a tie
    weight[0, 2, :32] = -(np.arange(32) - 15.5)
    weight[0, 2, 5] = -127.0
    ours = gguf_write.encode(weight, qtype)
    theirs = gguf.quants.quantize(weight, gguf.GGMLQuantizationType[qtype])
    np.testing.assert_array_equal(ours.reshape(-1), theirs.reshape(-1))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0"])
def test_seeded_blocks_are_written_as_drawn(qtype: str) -> None:
    """A weight born quantised (`SeededBlocks`, bench-full's) goes in as its drawn codes
    and scales: the file's values are `export.quantize`'s, scales rounded to float16."""
    weight = quantize.SeededBlocks.of((3, 5, 64), seed=7, scale=0.1)
    bits = 4 if qtype == "Q4_0" else 8
    drawn = quantize.quantize_unpacked(weight, bits, 32)  # codes (3, 5, 64), scales (3, 5, 2)
    scales = drawn.scales.astype(np.float16).astype(np.float32)
    codes = drawn.codes.astype(np.float32).reshape(3, 5, 2, 32) - (1 << (bits - 1))
    expected = (codes * scales[..., None]).reshape(3, 5, 64)
    data = gguf_write.encode(weight, qtype)
    values = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype]).reshape(3, 5, 64)
    np.testing.assert_array_equal(values, expected)
    with pytest.raises(ExportError, match="cannot be stored as F16"):
        gguf_write.encode(weight, "F16")


def test_types_follow_llama_cpp_s_converter() -> None:
    assert gguf_write.storage_type("blk.0.attn_q.weight", (64, 64), "Q4_0") == "Q4_0"
    assert gguf_write.storage_type("blk.0.ffn_down.weight", (64, 96), "Q4_0") == "Q4_0"
    assert gguf_write.storage_type("blk.0.attn_q.weight", (64, 48), "Q8_0") == "F16"
    assert gguf_write.storage_type("blk.0.ffn_gate_inp.weight", (8, 64), "Q4_0") == "F32"
    assert gguf_write.storage_type("blk.0.ffn_gate_inp.scale", (64,), "F16") == "F32"
    assert gguf_write.storage_type("blk.0.attn_norm.weight", (64,), "Q8_0") == "F32"
    assert gguf_write.storage_type("token_embd.weight", (512, 64), "F16") == "F16"


def test_tensors_are_read_one_at_a_time_in_file_order(model: Any, tmp_path: Path) -> None:
    """The writer asks for each tensor once, just before writing it (so memory holds one),
    and reports each as done."""
    asked: list[str] = []
    done: list[tuple[str, int, int]] = []
    source = weights_of(model)

    def weights(key: str) -> np.ndarray:
        asked.append(key)
        return source(key)

    path = tmp_path / "model.gguf"
    gguf_write.write_gguf(
        CONFIG, weights, path, "Q4_0", lambda *args: done.append(args), licence=LICENCE
    )
    planned = gguf_write.plan_tensors(spec_from_config(CONFIG), "Q4_0")
    assert asked == [t.key for t in planned if t.key is not None]
    assert [d[1:] for d in done] == [(i, len(planned)) for i in range(1, len(planned) + 1)]
    file = gguf_file.GgufFile(path)
    assert file.metadata["general.license"] == LICENCE
    assert file.metadata["general.file_type"] == 2  # MOSTLY_Q4_0
    assert [t.name for t in gguf.GGUFReader(path).tensors] == [t.name for t in planned]


def test_what_cannot_be_written_is_named(model: Any, tmp_path: Path) -> None:
    path, weights = tmp_path / "x.gguf", weights_of(model)
    with pytest.raises(ConfigKeyError, match="GGUF type 'Q4_K' is not supported"):
        gguf_write.write_gguf(CONFIG, weights, path, "Q4_K")
    with pytest.raises(UnsupportedArchitecture, match="'qwen3' cannot be written as GGUF"):
        gguf_write.write_gguf({**CONFIG, "model_type": "qwen3"}, weights, path)
    short = gguf_write.synthetic_vocab(300)
    with pytest.raises(ConfigKeyError, match=r"300 tokens .* for vocab_size 512"):
        gguf_write.write_gguf(CONFIG, weights, path, tokenizer=short)
    with pytest.raises(ConfigKeyError, match=r"'vocab_size' \(100\) is too small"):
        gguf_write.synthetic_vocab(100)

    def wrong(key: str) -> np.ndarray:
        return np.zeros((3, 3), np.float32)

    with pytest.raises(ExportError, match=r"has shape \(3, 3\), the config implies"):
        gguf_write.write_gguf(CONFIG, wrong, path, "F32")
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind


def test_llama_cpp_runs_the_file_as_transformers_does(model: Any, written: Path) -> None:
    """llama.cpp loads the F32 file and its logits are the transformers model's up to float
    rounding: 24 tokens, past the 16-token sliding window."""
    tokens = [2, *np.random.default_rng(3).integers(5, CONFIG["vocab_size"], 23).tolist()]
    assert_llama_cpp_matches(written / "model.gguf", model, tokens)
