"""The manifest schema (subtitled.translate.manifest): round trip, file checks, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from subtitled.errors import ModelError
from subtitled.translate.manifest import (
    KvLayer,
    Manifest,
    TensorInfo,
    file_entry,
    load_manifest,
    parse_manifest,
)


def _manifest(directory: Path) -> Manifest:
    (directory / "model.onnx").write_bytes(b"graph")
    return Manifest(
        name="tiny",
        architecture="gemma4_text",
        precision="fp32",
        licence="MIT",
        files=(file_entry(directory, "model.onnx"),),
        inputs=(TensorInfo("input_ids", "int64", ("batch", "sequence")),),
        outputs=(TensorInfo("logits", "float32", ("batch", "sequence", 512)),),
        kv_layout=(
            KvLayer(0, "sliding", ("key", "value"), 2, 16, 16),
            KvLayer(1, "full", ("value",), 1, 32, None),
        ),
    )


def test_round_trip_and_sha256(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    manifest.write(tmp_path)
    assert load_manifest(tmp_path) == manifest
    assert manifest.files[0].sha256 == hashlib.sha256(b"graph").hexdigest()
    assert manifest.files[0].bytes == 5


def test_changed_file_is_named(tmp_path: Path) -> None:
    _manifest(tmp_path).write(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"grapH")
    with pytest.raises(ModelError, match=r"model\.onnx does not match its sha256"):
        load_manifest(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx listed in .* is missing"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 2}, "schema_version 2"),
        ({"name": 3}, "key 'name' must be str"),
        ({"files": [{"path": "a", "bytes": True, "sha256": "x"}]}, r"files\[0\]: key 'bytes'"),
        ({"kv_layout": [{"layer": 0}]}, r"kv_layout\[0\]: key 'tensors'"),
        ({"inputs": [{"name": "x", "dtype": "f", "shape": [1.5]}]}, r"inputs\[0\]"),
    ],
)
def test_bad_manifest_names_the_key(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    data = json.loads(_manifest(tmp_path).to_json()) | change
    with pytest.raises(ModelError, match=message):
        parse_manifest(json.dumps(data))
