"""`export.restore`: the weights of an exported model back as a state dict, every layout
(float MatMul weights stored transposed, fp16, MatMulNBits blocks, quantised embedding rows,
gathered expert tables, Llama 4's (E, in, out) experts), and the bundled model's trained
weights restored well enough to verify against its own export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import ALL

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
transformers = pytest.importorskip("transformers", reason=REASON)

from export.cli import main  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.onnx_native import moe_kernel_precision  # noqa: E402
from export.plan import PRECISIONS  # noqa: E402
from export.quantize import block_size_for, dequantize, quantize  # noqa: E402
from export.reference import REFERENCE_DIR, export_random  # noqa: E402
from export.restore import restore  # noqa: E402
from subtitled.translate import native  # noqa: E402
from subtitled.translate.models import resolve_model  # noqa: E402

TATOEBA_MODEL = "subtitled-moe-small"  # the Tatoeba-only model, kept for these tests


def _dequantised(weight: np.ndarray, bits: int, k_axis: int) -> np.ndarray:
    """The values the export's int blocks along the input axis `k_axis` stand for."""
    moved = np.moveaxis(weight, k_axis, -1)
    block = block_size_for(moved.shape[-1], 32)
    assert block is not None
    return np.moveaxis(dequantize(quantize(moved, bits, block)), -1, k_axis)


@pytest.mark.parametrize(
    ("precision", "kernel"),
    [
        ("fp32", "sparse"),
        ("fp16", "sparse"),
        ("int8", "sparse"),
        ("int4", "sparse"),
        ("int8", "native"),
        ("int4", "native"),
    ],
)
@pytest.mark.parametrize("family", ["gemma4_text", "llama4_text", "qwen3_moe"])
def test_every_stored_layout_restores_to_its_values(
    family: str, precision: str, kernel: str, tmp_path: Path
) -> None:
    """Every layout: float, MatMulNBits, GatherBlockQuantized, the gathered expert tables
    and the native kernel's (`--moe-kernel native`; tiny Qwen3-MoE's sizes do not fit it and
    keep the gather path)."""
    if kernel == "native" and native.library_path() is None:
        pytest.skip("the native kernel was not built")
    config = ALL[family]()
    in_out = family == "llama4_text"  # tiny Llama 4's gate_up table is square: (E, 64, 64)
    out = tmp_path / "model"
    chosen = moe_kernel_precision(PRECISIONS[precision], kernel)
    export_random(config, out, chosen)
    # the model's own keys (transformers fuses per-expert checkpoint tensors on load)
    model = transformers.AutoModelForCausalLM.from_pretrained(out / REFERENCE_DIR)
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    restored = restore(out, {k: v.shape for k, v in reference.items()}, in_out)
    names = {
        t.name
        for t in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer
    }
    bits = PRECISIONS[precision].weight_bits
    quantised = 0
    for key, weight in reference.items():
        if key not in restored:
            assert key == "lm_head.weight" and config.get("tie_word_embeddings"), key
            continue
        value = restored[key]
        if f"{key}_scales" in names or f"{key}_native_scales" in names:
            assert bits is not None
            k_axis = 1 if in_out and weight.ndim == 3 else -1
            np.testing.assert_array_equal(value, _dequantised(weight, bits, k_axis), key)
            quantised += 1
        elif precision == "fp32" or weight.ndim == 1:  # norms and routers stay float32
            np.testing.assert_array_equal(value, weight, key)
        else:  # fp16, or a float32 router, or a matrix no block size fits
            rounded = weight.astype(np.float16).astype(np.float32)
            assert np.array_equal(value, rounded) or np.array_equal(value, weight), key
    assert (quantised > 0) == (bits is not None)


def test_the_bundled_models_weights_verify_against_its_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = resolve_model(TATOEBA_MODEL)
    hf_config = transformers.AutoConfig.from_pretrained(directory)
    model: Any = transformers.AutoModelForCausalLM.from_config(hf_config)
    state = model.state_dict()
    restored = restore(directory, {k: tuple(v.shape) for k, v in state.items()})
    assert set(state) - set(restored) == {"lm_head.weight"}  # tied to the embeddings
    model.load_state_dict({k: torch.from_numpy(v) for k, v in restored.items()}, strict=False)
    model.save_pretrained(tmp_path / "restored")
    capsys.readouterr()
    assert main(["verify", str(directory), "--reference", str(tmp_path / "restored")]) == 0
    report = capsys.readouterr().out
    cosine = float(report.split("logit cosine similarity")[1].split("mean")[1].split(",")[0])
    assert cosine > 0.9999, report
    assert "greedy top-1 agreement   100.0%" in report


def test_a_model_of_another_shape_is_refused() -> None:
    directory = resolve_model(TATOEBA_MODEL)
    with pytest.raises(ExportError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' restores"):
        restore(directory, {"model.layers.0.mlp.gate_proj.weight": (256, 256)})
    with pytest.raises(ExportError, match="not an exported model directory"):
        restore(directory.parent, {})
