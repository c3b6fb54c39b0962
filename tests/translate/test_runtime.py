"""Loading a model directory: a corrupt or mismatched one is a clear `ModelError`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from subtitled.errors import ModelError
from subtitled.translate.runtime import OnnxModel, RuntimeConfig


@pytest.fixture
def copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_loads_and_reports_what_it_is(tiny_model_dir: Path) -> None:
    model = OnnxModel(tiny_model_dir, RuntimeConfig(threads=1))
    assert model.device == "cpu" and model.vocab_size == 512
    assert model.stop_ids == {model.tokenizer.token_id("<eos>", "test")}


def test_corrupt_weights_name_the_file(copy: Path) -> None:
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.onnx does not match its sha256"):
        OnnxModel(copy)


def test_graph_that_does_not_match_the_manifest(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["inputs"][2]["name"] = "past_key_values.9.key"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    expected = r"does not match .*manifest\.json.*past_key_values\.9\.key"
    with pytest.raises(ModelError, match=expected):
        OnnxModel(copy)


def test_model_without_prompt_cannot_translate(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["prompt"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="no 'tokenizer' or no 'prompt'"):
        OnnxModel(copy)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OnnxModel(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("value", "loads"), [(12, 12), (0, 0), (None, 0), (-3, None), ("12", None)]
)
def test_the_manifests_sentence_words(copy: Path, value: object, loads: int | None) -> None:
    """Optional: older manifests have none (never split); a bad value names the key."""
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["prompt"]["sentence_words"] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    if loads is None:
        with pytest.raises(ModelError, match="sentence_words"):
            OnnxModel(copy)
    else:
        assert OnnxModel(copy).prompt.sentence_words == loads


def test_length_slots_that_mix_windows_name_the_manifest(copy: Path) -> None:
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    full = next(kv for kv in manifest["kv_layout"] if kv["window"] is None)
    full["length_slot"] = 0  # the sliding layers' slot
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"manifest\.json kv_layout: .*mixes windows"):
        OnnxModel(copy)
