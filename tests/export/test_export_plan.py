"""The size plan against figures computed by hand for the tiny Gemma 4, and the 26B-A4B target."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from export_configs import tiny_gemma4, tiny_mixtral

from export.cli import main
from export.families import spec_from_config
from export.plan import PRECISIONS, Plan, make_plan

GEMMA4_26B = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "configs"
    / "gemma-4-26b-a4b-it.text_config.json"
)

# Hand-computed for tiny_gemma4(): hidden 64, vocab 512, layers sliding/full/sliding/full;
# sliding: 4 q heads x 16, 2 KV heads x 16, K and V; full: 4 q heads x 32, 1 KV head x 32, K=V;
# dense MLP 96; 8 experts of 32, top-2.
HAND_PARAMS = {
    "embeddings": 512 * 64,
    # sliding: q 64x64 + k 32x64 + v 32x64 + o 64x64; full: q 128x64 + k 32x64 + o 64x128
    "attention": 2 * (4096 + 2048 + 2048 + 4096) + 2 * (8192 + 2048 + 8192),
    "dense mlp": 4 * 3 * 64 * 96,
    "experts": 4 * 8 * 3 * 64 * 32,
    "router": 4 * 8 * 64,
    # per layer: 7 hidden-wide norms + router.scale (8 x 64), q/k norms, layer_scalar,
    # per_expert_scale; plus the final norm
    "norms": 2 * (8 * 64 + 2 * 16 + 1 + 8) + 2 * (8 * 64 + 2 * 32 + 1 + 8) + 64,
    "lm head": 0,
}
# int4: rows x ceil(cols / 32) blocks x (16 packed bytes + 2 scale bytes)
HAND_INT4_BYTES = {
    "embeddings": 512 * 2 * 18,
    "attention": 2 * (64 * 2 + 32 * 2 + 32 * 2 + 64 * 2) * 18
    + 2 * (128 * 2 + 32 * 2 + 64 * 4) * 18,
    "dense mlp": 4 * (96 * 2 + 96 * 2 + 64 * 3) * 18,
    "experts": 4 * 8 * (32 * 2 + 32 * 2 + 64 * 1) * 18,
    "router": 4 * 8 * 64 * 2,
    "norms": HAND_PARAMS["norms"] * 2,
    "lm head": 0,
}


def _plan(precision: str) -> Plan:
    return make_plan(spec_from_config(tiny_gemma4()), PRECISIONS[precision])


def test_parameters_per_part_match_hand_count() -> None:
    plan = _plan("fp32")
    assert {part.name: part.params for part in plan.parts} == HAND_PARAMS
    assert plan.total_params == 368_932
    assert plan.total_bytes == 4 * 368_932


def test_int4_bytes_count_packed_nibbles_and_fp16_block_scales() -> None:
    plan = _plan("int4")
    assert {part.name: part.bytes for part in plan.parts} == HAND_INT4_BYTES
    assert plan.total_bytes == 213_832


@pytest.mark.parametrize(
    ("precision", "rows", "cols", "expected"),
    [
        ("fp32", 3, 40, 3 * 40 * 4),
        ("fp16", 3, 40, 3 * 40 * 2),
        ("int8", 3, 40, 3 * 2 * (32 + 2)),  # 40 columns pad to two blocks of 32
        ("int4", 3, 40, 3 * 2 * (16 + 2)),
    ],
)
def test_matrix_bytes(precision: str, rows: int, cols: int, expected: int) -> None:
    assert PRECISIONS[precision].matrix_bytes(rows, cols) == expected


def test_active_parameters_count_only_the_top_k_experts() -> None:
    plan = _plan("fp32")
    idle = 4 * (8 - 2) * 3 * 64 * 32
    assert plan.active_params == 368_932 - idle
    assert plan.active_params_without_embeddings == 368_932 - idle - 512 * 64


def test_kv_cache_respects_window_and_k_eq_v() -> None:
    plan = _plan("fp32")
    sliding_per_token = 2 * 2 * 2 * 16 * 4  # 2 layers x (K, V) x 2 heads x 16 x fp32
    # 2 layers x K and V (K=V, but the shared-buffer export caches K beside V) x 1 head x 32
    full_per_token = 2 * 2 * 1 * 32 * 4
    assert plan.kv_bytes(1) == sliding_per_token + full_per_token == 1024
    assert plan.kv_bytes(16) == 16 * 1024
    assert plan.kv_bytes(4096) == 16 * sliding_per_token + 4096 * full_per_token
    assert _plan("int4").kv_bytes(4096) == plan.kv_bytes(4096) // 2  # fp16 cache
    # --kv-cache append: V only
    append = dataclasses.replace(PRECISIONS["fp32"], shared_cache=False)
    v_only = make_plan(spec_from_config(tiny_gemma4()), append)
    assert v_only.kv_bytes(4096) == 16 * sliding_per_token + 4096 * full_per_token // 2


def test_memory_needed_adds_weights_kv_and_workspace() -> None:
    plan = _plan("int4")
    one_layer_top2_experts = 2 * (32 * 2 + 32 * 2 + 64) * 18
    assert plan.workspace_bytes == 512 * 4 + one_layer_top2_experts
    assert plan.memory_bytes(4096) == plan.total_bytes + plan.kv_bytes(4096) + plan.workspace_bytes


def test_untied_head_counts_a_second_table() -> None:
    plan = make_plan(spec_from_config(tiny_mixtral()), PRECISIONS["fp16"])
    head = {part.name: part for part in plan.parts}["lm head"]
    assert head.params == 256 * 32 and head.bytes == 256 * 32 * 2


def test_gemma4_26b_a4b_int4_fits_in_14_5_gb() -> None:
    plan = make_plan(spec_from_config(json.loads(GEMMA4_26B.read_text())), PRECISIONS["int4"])
    assert plan.total_bytes <= 14.5e9
    assert 25.0e9 < plan.total_params < 25.5e9  # "26B": 25.2 B with the tied table once
    assert 3.7e9 < plan.active_params < 3.9e9  # "A4B": 8 of 128 experts
    # 25 sliding layers x K,V x 8 x 256 + 5 full layers x V x 2 x 512, fp16
    assert plan.kv_bytes(1) == 25 * 2 * 8 * 256 * 2 + 5 * 2 * 2 * 512 * 2


def test_cli_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", str(GEMMA4_26B), "--precision", "int4"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "14.210 GB" in out
    assert "262,144" in out and "tied: shares the embedding table" in out
    assert "5 x full: 2 heads x 512, K and V" in out
    assert "K=V layers: K cached beside V" in out


def test_cli_reports_bad_config_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt_oss"}))
    assert main(["plan", "--config", str(config)]) == 2
    assert "'gpt_oss' is not supported" in capsys.readouterr().err
    config.write_text("{not json")
    assert main(["plan", "--config", str(config)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["plan", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read config" in capsys.readouterr().err
