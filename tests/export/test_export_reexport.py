"""`python -m export reexport`: an exported model exported again keeps its weights (the
same int8 codes), name, licence, prompt and documents, on the newer graph it asks for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_configs import tiny_gemma4

from export.cli import main
from subtitled.translate import native
from subtitled.translate.manifest import load_manifest

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from export.reference import random_model  # noqa: E402 - needs torch
from export.restore import restore  # noqa: E402 - needs onnx


@pytest.mark.skipif(native.library_path() is None, reason="native kernel not built")
def test_reexport_moves_a_model_to_the_native_kernel_with_the_same_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_gemma4()
    (tmp_path / "config.json").write_text(json.dumps(config))
    old, new, checkpoint = tmp_path / "old", tmp_path / "new", tmp_path / "checkpoint"
    argv = ["onnx", "--config", str(tmp_path / "config.json"), "--random-weights"]
    assert main([*argv, "--out", str(tmp_path / "random")]) == 0
    source = tmp_path / "random" / "reference"  # a Hugging Face checkpoint with a sidecar
    sidecar = {"name": "tiny", "licence": "test", "prompt": {"sentence_words": 9}}
    (source / "subtitled.json").write_text(json.dumps(sidecar))
    (source / "MODEL_CARD.md").write_text("# card\n")
    argv = ["onnx", "--model", str(source), "--out", str(old), "--precision", "int8"]
    assert main([*argv, "--moe-kernel", "sparse"]) == 0
    again = ["reexport", str(old), "--out", str(new), "--keep-checkpoint", str(checkpoint)]
    assert main(again) == 0

    before, after = load_manifest(old), load_manifest(new)
    assert after.precision == "int8" and after.name == before.name == "tiny"
    assert after.licence == before.licence and after.prompt == before.prompt
    assert after.prompt is not None and after.prompt.sentence_words == 9
    assert (new / "MODEL_CARD.md").read_text() == "# card\n"
    nodes = onnx.load(str(new / "model.onnx"), load_external_data=False).graph.node
    assert any(n.op_type == native.OP for n in nodes)

    shapes = {k: tuple(v.shape) for k, v in random_model(config).state_dict().items()}
    weights_before, weights_after = restore(old, shapes), restore(new, shapes)
    assert set(weights_before) == set(weights_after)
    for key, value in weights_before.items():  # re-quantising gives the same codes back
        np.testing.assert_allclose(weights_after[key], value, rtol=0, atol=1e-6, err_msg=key)

    capsys.readouterr()
    assert main(["verify", str(new), "--reference", str(checkpoint)]) == 0
    assert "verify: passed" in capsys.readouterr().out


def test_reexport_without_kept_checkpoint_leaves_no_stale_reference(tmp_path: Path) -> None:
    """The restored checkpoint lives in a temporary folder: no reference.json may point at
    it once it is gone (verify would fail on a path that no longer exists)."""
    (tmp_path / "config.json").write_text(json.dumps(tiny_gemma4()))
    model, again = tmp_path / "model", tmp_path / "again"
    argv = ["onnx", "--config", str(tmp_path / "config.json"), "--random-weights"]
    assert main([*argv, "--out", str(tmp_path / "random")]) == 0
    checkpoint = str(tmp_path / "random" / "reference")
    argv = ["onnx", "--model", checkpoint, "--out", str(model), "--licence", "test"]
    assert main([*argv, "--precision", "int8"]) == 0
    assert (model / "reference.json").is_file()  # an export from a checkpoint links it
    assert main(["reexport", str(model), "--out", str(again)]) == 0
    assert (again / "model.onnx").is_file() and not (again / "reference.json").exists()


def test_reexport_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(tiny_gemma4()))
    model = tmp_path / "model"
    argv = ["onnx", "--config", str(tmp_path / "config.json"), "--random-weights"]
    assert main([*argv, "--out", str(model)]) == 0
    assert main(["reexport", str(model), "--out", str(model)]) != 0
