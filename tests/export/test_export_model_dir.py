"""Export from a Hugging Face checkpoint directory (`onnx --model DIR`): lazy sharded
safetensors, tokenizer and licence files, prompt template and licence from subtitled.json,
verify against the recorded checkpoint; quantised precisions; errors that name the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from export_configs import tiny_gemma4, tiny_qwen3_moe

from export.cli import main

REASON = "the export extra is not installed: pip install -e '.[export]'"
onnx = pytest.importorskip("onnx", reason=REASON)
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
tokenizers = pytest.importorskip("tokenizers", reason=REASON)
pytest.importorskip("onnxruntime", reason="onnxruntime is a runtime dependency")

from export.model_dir import REFERENCE_LINK  # noqa: E402 - needs onnx
from export.reference import random_model  # noqa: E402 - needs torch
from export.verify import SAMPLE  # noqa: E402 - needs torch
from subtitled.translate.contract import MODEL_FILE  # noqa: E402
from subtitled.translate.manifest import load_manifest  # noqa: E402

SPECIALS = ["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]


def _tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer whose vocabulary covers the verify sample and template."""
    words = [*SPECIALS, "user", "model", "Translate", "into", "German", ":", "."]
    words += SAMPLE.replace(",", " ").replace(".", " ").split()
    vocab: dict[str, int] = {}
    for word in words:
        vocab.setdefault(word, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"w{i}"] = i
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [tokenizers.pre_tokenizers.Split("\n", "removed"), tokenizers.pre_tokenizers.Whitespace()]
    )
    tok.add_special_tokens(SPECIALS)
    return tok


def _checkpoint(root: Path, config: dict[str, Any], sidecar: dict[str, Any] | None) -> Path:
    """A sharded safetensors checkpoint with tokenizer, licence and model card."""
    path = root / "checkpoint"
    random_model(config).save_pretrained(path, max_shard_size="100KB")
    _tokenizer(config["vocab_size"]).save(str(path / "tokenizer.json"))
    (path / "LICENSE").write_text("test licence\n")
    (path / "README.md").write_text("# tiny\n")
    if sidecar is not None:
        (path / "subtitled.json").write_text(json.dumps(sidecar))
    return path


SIDECAR = {
    "name": "tiny-translate",
    "licence": "CC-BY-4.0 (test)",
    "prompt": {"languages": {"de": "German"}, "sentence_words": 16},
    "max_positions": 512,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("gemma"), tiny_gemma4(), SIDECAR)


def test_checkpoint_export_manifest_and_verify(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (checkpoint / "model.safetensors.index.json").is_file()  # sharded
    out = tmp_path / "model"
    assert main(["onnx", "--model", str(checkpoint), "--out", str(out)]) == 0
    manifest = load_manifest(out)  # every file's sha256 checked
    assert manifest.name == "tiny-translate" and manifest.licence == "CC-BY-4.0 (test)"
    assert manifest.tokenizer == "tokenizer.json" and manifest.max_positions == 512
    assert manifest.prompt is not None and manifest.prompt.languages == {"de": "German"}
    assert manifest.prompt.turn("Hi", "de").startswith("<start_of_turn>user\nTranslate into German")
    assert manifest.prompt.stop == ("<end_of_turn>", "<eos>")
    assert manifest.prompt.sentence_words == 16
    listed = {f.path for f in manifest.files}
    assert {MODEL_FILE, "model.onnx.data", "tokenizer.json", "LICENSE", "README.md"} <= listed
    assert (out / REFERENCE_LINK).is_file() and REFERENCE_LINK not in listed
    assert [kv.layer for kv in manifest.kv_layout] == [0, 1, 2, 3]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    report = capsys.readouterr().out
    assert "prompt template" in report and "verify: passed" in report


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_quantised_export_passes_verify(
    precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path, tiny_qwen3_moe(), {"licence": "MIT"})
    out = tmp_path / precision
    assert (
        main(["onnx", "--model", str(checkpoint), "--out", str(out), "--precision", precision]) == 0
    )
    shutil.move(checkpoint, tmp_path / "moved")  # the recorded path is gone: --reference
    capsys.readouterr()
    assert main(["verify", str(out), "--reference", str(tmp_path / "moved")]) == 0
    report = capsys.readouterr().out
    assert "cosine similarity" in report and "top-1 agreement" in report, report


def test_int4_graph_is_sparse_and_small(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = {}
    for precision in ("fp32", "int4"):
        out = tmp_path / precision
        argv = ["onnx", "--model", str(checkpoint), "--out", str(out), "--precision", precision]
        assert main([*argv, "--moe-kernel", "sparse"]) == 0
        sizes[precision] = (out / "model.onnx.data").stat().st_size
    assert sizes["int4"] < sizes["fp32"] / 4
    graph = onnx.load(str(tmp_path / "int4" / MODEL_FILE), load_external_data=False).graph
    ops = {node.name: node.op_type for node in graph.node}
    assert ops["/model/layers.0/self_attn/q_proj/MatMulNBits"] == "MatMulNBits"
    assert ops["/model/layers.0/self_attn/GroupQueryAttention"] == "GroupQueryAttention"
    assert ops["/model/embed_tokens/GatherBlockQuantized"] == "GatherBlockQuantized"
    # on the gather path (`--moe-kernel sparse`; the native kernel is tested in
    # test_export_native.py) the top-k experts' int4 blocks are gathered and multiplied
    # as integers
    assert ops["/model/layers.1/experts/gate_up_proj/Gather"] == "Gather"
    assert ops["/model/layers.1/experts/gate_up_proj/MatMulInteger"] == "MatMulInteger"
    assert ops["/model/layers.1/experts/down_proj/MatMulInteger"] == "MatMulInteger"
    capsys.readouterr()
    main(["verify", str(tmp_path / "int4")])
    assert "greedy top-1 agreement" in capsys.readouterr().out


def test_missing_licence_is_an_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    (bare / "subtitled.json").unlink()
    assert main(["onnx", "--model", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert "pass --licence" in capsys.readouterr().err
    assert (
        main(["onnx", "--model", str(bare), "--out", str(tmp_path / "o"), "--licence", "MIT"]) == 0
    )


def test_missing_tensor_shape_mismatch_and_architecture_are_named(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.layers.2.experts.down_proj"]
    index_path.write_text(json.dumps(index))
    assert main(["onnx", "--model", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "'model.layers.2.experts.down_proj' is missing" in capsys.readouterr().err

    config = json.loads((checkpoint / "config.json").read_text())
    shutil.copy(checkpoint / "model.safetensors.index.json", index_path)
    config["intermediate_size"] = 80
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["onnx", "--model", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "'model.layers.0.mlp.gate_proj.weight' has shape (96, 64)" in capsys.readouterr().err

    config["model_type"] = "gpt2"
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["onnx", "--model", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "model_type 'gpt2' is not supported" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(checkpoint / "config.json", empty / "config.json")
    assert (
        main(["onnx", "--model", str(empty), "--out", str(tmp_path / "o"), "--licence", "MIT"]) == 2
    )
    assert "no *.safetensors file" in capsys.readouterr().err
