"""`python -m export bench-full` on Gemma 4's shape family shrunk: the seeded weights born
quantised, the bytes a decoded token reads (by hand), and the whole command end to end
under subtitled's runtime (and llama.cpp where llama-cpp-python is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_configs import tiny_gemma4
from onnx import numpy_helper

from export.bench_full import (
    kv_bytes,
    measure,
    onnx_weight_bytes_per_token,
    seeded_weights,
    write_onnx,
)
from export.cli import main
from export.families import spec_from_config
from export.plan import PRECISIONS
from export.quantize import SeededBlocks, quantize, quantize_unpacked


def test_seeded_blocks_draw_codes_and_scales_from_the_seed_alone() -> None:
    weight = SeededBlocks.of((6, 64), seed=3, scale=0.125)
    assert weight.strides == (0, 0)  # no memory behind the stand-in
    q = quantize_unpacked(weight, 4, 32)
    again = quantize_unpacked(SeededBlocks.of((6, 64), seed=3, scale=0.125), 4, 32)
    other = quantize_unpacked(SeededBlocks.of((6, 64), seed=4, scale=0.125), 4, 32)
    assert q.codes.shape == (6, 64) and q.scales.shape == (6, 2)
    assert np.array_equal(q.codes, again.codes) and np.array_equal(q.scales, again.scales)
    assert not np.array_equal(q.codes, other.codes)
    assert q.codes.max() <= 15 and len(np.unique(q.codes)) == 16
    # around scale / 4.6 each: the values' spread is about `scale`
    assert np.all((q.scales > 0.125 / 4.6 * 0.79) & (q.scales < 0.125 / 4.6 * 1.21))
    # a view keeps the seed (the exporter transposes expert tables)
    view = weight.reshape(3, 2, 64)
    assert isinstance(view, SeededBlocks) and view.seed == 3
    # packed like any quantised weight: two codes a byte
    assert quantize(weight, 4, 32).codes.shape == (6, 32)
    assert quantize_unpacked(weight, 8, 32).codes.max() > 15


def test_seeded_weights_are_per_key_and_floats_stay_floats() -> None:
    spec = spec_from_config(tiny_gemma4())
    one, two = seeded_weights(spec, 0), seeded_weights(spec, 0)
    matrix = one("model.layers.0.self_attn.q_proj.weight")
    assert isinstance(matrix, SeededBlocks) and matrix.shape == (64, 64)
    assert matrix.seed == two("model.layers.0.self_attn.q_proj.weight").seed
    assert matrix.seed != one("model.layers.1.self_attn.q_proj.weight").seed
    router = one("model.layers.0.router.proj.weight")
    assert not isinstance(router, SeededBlocks) and router.shape == (8, 64)
    norm = one("model.layers.0.input_layernorm.weight")
    assert np.array_equal(norm, two("model.layers.0.input_layernorm.weight"))
    assert abs(float(norm.mean()) - 1.0) < 0.1
    assert np.all(one("model.layers.0.router.per_expert_scale") >= 1.0)


def _stored_bytes(tensor: onnx.TensorProto) -> int:
    external = {e.key: e.value for e in tensor.external_data}
    if "length" in external:
        return int(external["length"])
    return int(numpy_helper.to_array(tensor).nbytes)


def test_bytes_a_decoded_token_reads_by_hand(tmp_path: Path) -> None:
    spec = spec_from_config(tiny_gemma4())
    write_onnx(tiny_gemma4(), tmp_path / "onnx", PRECISIONS["int4"], 0, lambda *_: None)
    block = 16 + 4  # 32 int4 codes + a float32 scale (the ops take the activations' type)
    matrices = (
        512 * 2 * block  # embeddings = the tied LM head, read whole
        + 2 * (64 * 2 + 32 * 2 + 32 * 2 + 64 * 2) * block  # sliding q, k, v, o
        + 2 * (128 * 2 + 32 * 2 + 64 * 4) * block  # full q, k (= v), o
        + 4 * (96 * 2 + 96 * 2 + 64 * 3) * block  # dense MLP gate, up, down
        + 4 * 2 * (64 * 2 + 64 * 1) * block  # top-2 experts: gate_up (64 x 64), down (64 x 32)
    )
    # routers (8 x 64) and every norm and scale, float32
    floats = 4 * (4 * 8 * 64 + 2 * (8 * 64 + 2 * 16 + 1 + 8) + 2 * (8 * 64 + 2 * 32 + 1 + 8) + 64)
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx"), load_external_data=False)
    constants = sum(  # RoPE tables, shapes: read whole
        _stored_bytes(t) for t in graph.graph.initializer if t.name.startswith("/")
    )
    assert onnx_weight_bytes_per_token(tmp_path / "onnx", spec) == matrices + floats + constants
    # at 100 tokens: sliding layers hold their window of 16 (K and V, 2 heads x 16), full
    # layers all 100 (K = V, 1 head x 32, but the shared-buffer export caches K beside V)
    assert kv_bytes(spec, 100, 4) == 2 * 2 * 2 * 16 * 16 * 4 + 2 * 2 * 1 * 32 * 100 * 4


def test_the_seeded_export_runs_in_subtitled_runtime(tmp_path: Path) -> None:
    write_onnx(tiny_gemma4(), tmp_path / "onnx", PRECISIONS["int4"], 0, lambda *_: None)
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["precision"] == "int4"
    figures = measure("onnx", tmp_path / "onnx", 1, (20, 40), 5, 8, 512, 0)
    assert [c.context for c in figures.contexts] == [20, 40]
    assert all(c.decode_ms > 0 and c.prefill_tokens_per_s > 0 for c in figures.contexts)
    assert figures.peak_rss >= figures.rss_after_load > 0


def test_bench_full_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_gemma4()))
    work = tmp_path / "work"
    argv = ["bench-full", "--config", str(config), "--threads", "1", "--contexts", "20,40"]
    argv += ["--clause", "5", "--chunk", "8", "--work", str(work)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "memory read bandwidth" in out and "written in" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("onnx ", "llama.cpp "))]
    runtimes = {row[0] for row in rows}
    assert "onnx" in runtimes
    for row in rows:
        if len(row) == 7:  # a context row: decode ms and its bandwidth limit are positive
            assert int(row[1]) in (20, 40) and float(row[3]) > 0 and float(row[4]) > 0
    # --work keeps the files and the next run reuses them
    assert (work / "onnx" / "manifest.json").is_file()
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().out


def test_bench_full_without_work_removes_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_gemma4()))
    argv = ["bench-full", "--config", str(config), "--threads", "1", "--contexts", "10"]
    assert main([*argv, "--clause", "3", "--chunk", "8", "--no-llama-cpp"]) == 0
    assert "onnx" in capsys.readouterr().out
    assert not list(tmp_path.glob("bench-full-*"))


def test_bench_full_refuses_a_float_precision(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_gemma4()))
    with pytest.raises(SystemExit):
        main(["bench-full", "--config", str(config), "--precision", "fp32"])
