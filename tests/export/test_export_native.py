"""Export with subtitled's native expert kernel (`--moe-kernel native`, export/onnx_native.py):
every MoE family's experts in one `SparseExperts` node per MoE layer, no gathered tables,
verified against transformers; and which kernel each `--moe-kernel` choice gives."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from export_configs import ALL

from export.cli import main
from export.errors import ExportError
from export.families import spec_from_config
from export.plan import PRECISIONS
from subtitled.translate import native

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from export.onnx_native import moe_kernel_precision  # noqa: E402 - needs onnx
from subtitled.translate.contract import MODEL_FILE  # noqa: E402

built = pytest.mark.skipif(native.library_path() is None, reason="native kernel not built")


def _native_sized(family: str) -> dict[str, Any]:
    """The family's tiny config with hidden and expert sizes multiples of 32 (one block
    size for both of the kernel's products)."""
    config = ALL[family]()
    if family == "qwen3_moe":
        config.update(hidden_size=64, moe_intermediate_size=32)
    if family == "mixtral":
        config.update(hidden_size=64, intermediate_size=32)
    return config


def _export(config: dict[str, Any], out: Path, *flags: str) -> list[Any]:
    (out.parent / "config.json").write_text(json.dumps(config))
    argv = ["onnx", "--config", str(out.parent / "config.json"), "--random-weights"]
    assert main([*argv, "--out", str(out), *flags]) == 0
    return list(onnx.load(str(out / MODEL_FILE), load_external_data=False).graph.node)


def _verify(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[bool, float]:
    """verify's verdict and mean logit cosine similarity."""
    capsys.readouterr()
    passed = main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    match = re.search(r"logit cosine similarity\s+mean ([0-9.]+)", text)
    assert match, text
    return passed, float(match.group(1))


@built
@pytest.mark.parametrize(
    "family", ["gemma4_text", "qwen3_moe", "mixtral", "llama4_text", "deepseek_v3"]
)
def test_every_moe_family_verifies_on_the_native_kernel(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One `SparseExperts` node per MoE layer and nothing else touching the experts; against
    transformers, as close as the sparse gather path of the same int8 model (tiny random
    models with near-tied routers miss the 0.99 cosine bar on either path for Mixtral and
    DeepSeek-V3: a token routed differently), and passing wherever that path passes."""
    config = _native_sized(family)
    nodes = _export(config, tmp_path / "native", "--precision", "int8", "--moe-kernel", "native")
    moe_layers = sum(layer.moe is not None for layer in spec_from_config(config).layers)
    assert moe_layers > 0
    assert sum(n.op_type == native.OP and n.domain == native.DOMAIN for n in nodes) == moe_layers
    expert_ops = {n.op_type for n in nodes if "/experts" in n.name}
    assert not expert_ops & {"QMoE", "MatMulInteger", "Gather", "GatherBlockQuantized"}
    _export(config, tmp_path / "sparse", "--precision", "int8", "--moe-kernel", "sparse")
    native_passed, native_cosine = _verify(tmp_path / "native", capsys)
    sparse_passed, sparse_cosine = _verify(tmp_path / "sparse", capsys)
    assert native_cosine >= sparse_cosine - 0.01, (native_cosine, sparse_cosine)
    assert native_passed or not sparse_passed


@built
def test_auto_takes_the_native_kernel_when_built(tmp_path: Path) -> None:
    nodes = _export(_native_sized("qwen3_moe"), tmp_path / "auto", "--precision", "int8")
    assert any(n.op_type == native.OP for n in nodes)
    nodes = _export(  # softmax routing renormalised: what QMoE computes
        _native_sized("mixtral"), tmp_path / "qmoe", "--precision", "int8", "--moe-kernel", "qmoe"
    )
    assert any(n.op_type == "QMoE" for n in nodes) and not any(
        n.op_type == native.OP for n in nodes
    )


def test_sizes_or_precisions_the_kernel_does_not_take_fall_back(tmp_path: Path) -> None:
    """Float precisions and expert sizes that are not a multiple of one block size keep
    the other kernels; the model then needs no native library."""
    nodes = _export(ALL["mixtral"](), tmp_path / "odd", "--precision", "int8")  # I = 40
    assert not any(n.op_type == native.OP for n in nodes)
    nodes = _export(_native_sized("mixtral"), tmp_path / "fp32", "--precision", "fp32")
    assert not any(n.op_type == native.OP for n in nodes)


def test_moe_kernel_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    int8 = PRECISIONS["int8"]
    assert not moe_kernel_precision(int8, "sparse").fused_moe
    assert moe_kernel_precision(int8, "qmoe").fused_moe
    assert not moe_kernel_precision(int8, "qmoe").native_moe
    monkeypatch.setattr("export.onnx_native.library_path", lambda: None)
    assert not moe_kernel_precision(int8, "auto").native_moe  # not built: QMoE or sparse
    with pytest.raises(ExportError, match="native kernel was not built"):
        moe_kernel_precision(int8, "native")
