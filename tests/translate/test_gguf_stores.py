"""Ollama's and LM Studio's model stores, read offline (`subtitled.translate.gguf_stores`),
and `subtitled models` listing what they hold with the command that exports each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from subtitled.cli import main
from subtitled.errors import ConfigError
from subtitled.translate import gguf_stores

GGUF_MAGIC = b"GGUF\x03\x00\x00\x00"


def _ollama_model(root: Path, name: str, tag: str, payload: bytes) -> Path:
    digest = "sha256:" + payload.hex()[:8].ljust(64, "0")
    blob = root / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    namespace, _, model = name.rpartition("/")
    manifest = root / "manifests" / "registry.ollama.ai" / (namespace or "library") / model / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
        {"mediaType": gguf_stores.OLLAMA_MODEL_LAYER, "digest": digest},
    ]}))
    return blob


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    ollama, lmstudio = tmp_path / "ollama", tmp_path / "lmstudio"
    _ollama_model(ollama, "gemma3", "270m", GGUF_MAGIC + b"a" * 100)
    _ollama_model(ollama, "someone/qwen3-moe", "latest", GGUF_MAGIC + b"b" * 100)
    # A pulled manifest whose model layer is missing (an interrupted pull): not listed.
    broken = ollama / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text(json.dumps({"layers": [
        {"mediaType": gguf_stores.OLLAMA_MODEL_LAYER, "digest": "sha256:" + "f" * 64}]}))
    repo = lmstudio / "lmstudio-community" / "Qwen3-4B-GGUF"
    repo.mkdir(parents=True)
    (repo / "Qwen3-4B-Q4_K_M.gguf").write_bytes(GGUF_MAGIC)
    (repo / "mmproj-Qwen3-4B-F16.gguf").write_bytes(GGUF_MAGIC)  # a vision projector
    return {"OLLAMA_MODELS": str(ollama), "LMSTUDIO_MODELS": str(lmstudio), "HOME": str(tmp_path)}


def test_names_resolve_to_files_in_the_stores(stores: dict[str, str]) -> None:
    ollama, lmstudio = Path(stores["OLLAMA_MODELS"]), Path(stores["LMSTUDIO_MODELS"])
    blob = gguf_stores.resolve_model("ollama:gemma3:270m", stores)
    assert blob.parent == ollama / "blobs" and blob.read_bytes().startswith(GGUF_MAGIC)
    assert gguf_stores.resolve_model("ollama:someone/qwen3-moe", stores).is_file()  # tag latest
    repo = lmstudio / "lmstudio-community" / "Qwen3-4B-GGUF"
    # The one weights file of a repository (the projector is not it), or a file by name.
    assert gguf_stores.resolve_model("lmstudio:lmstudio-community/Qwen3-4B-GGUF", stores) == (
        repo / "Qwen3-4B-Q4_K_M.gguf"
    )
    named = "lmstudio:lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf"
    assert gguf_stores.resolve_model(named, stores) == repo / "Qwen3-4B-Q4_K_M.gguf"
    assert gguf_stores.resolve_model("/any/checkpoint", stores) == Path("/any/checkpoint")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ollama:gemma3:1b", r"'gemma3:1b' is not in .*\(pull it with `ollama pull gemma3:1b`"),
        ("ollama:../../etc/passwd", "not an Ollama model name"),
        ("ollama:", "not an Ollama model name"),
        ("ollama:broken", r"names sha256:f+, but .* is missing"),
        ("lmstudio:nobody/nothing", "LM Studio model 'nobody/nothing' is not in"),
    ],
)
def test_what_is_not_there_is_named(stores: dict[str, str], value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gguf_stores.resolve_model(value, stores)


def test_default_stores_follow_home_and_the_environment(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert gguf_stores.ollama_roots(home)[0] == tmp_path / ".ollama" / "models"
    assert gguf_stores.lmstudio_roots(home)[0] == tmp_path / ".lmstudio" / "models"
    assert gguf_stores.ollama_roots({**home, "OLLAMA_MODELS": "/srv/o"}) == [Path("/srv/o")]
    assert gguf_stores.find_gguf_models(home) == []


def test_models_lists_them_with_the_export_command(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in stores.items():
        monkeypatch.setenv(key, value)
    found = [m.reference for m in gguf_stores.find_gguf_models()]
    assert found == [
        "ollama:gemma3:270m",
        "ollama:someone/qwen3-moe:latest",
        "lmstudio:lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf",
    ]
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "GGUF models of Ollama / LM Studio" in out
    assert "python -m export onnx --model ollama:gemma3:270m --out DIR" in out
    assert "broken" not in out and "mmproj" not in out
