"""GGUF files (llama.cpp, Ollama, LM Studio) exported to ONNX model directories:
`python -m export onnx --model FILE.gguf | ollama:NAME | lmstudio:PUB/REPO`.

Tiny random models of each family are written as GGUF the way llama.cpp's converter
writes them (`gguf_writer`; transformers' own GGUF reader checks the writer), exported,
and verified against the transformers model they came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import tiny_mixtral, tiny_qwen3, tiny_qwen3_moe

REASON = "the export extra is not installed: pip install -e '.[export]'"
pytest.importorskip("gguf", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from gguf_writer import family_folder, permute_rope_rows, write_gguf  # noqa: E402

from export import gguf_config, gguf_file  # noqa: E402
from export.cli import main  # noqa: E402
from export.errors import ExportError  # noqa: E402
from export.reference import random_model  # noqa: E402
from subtitled.translate import gguf_stores  # noqa: E402
from subtitled.translate.manifest import load_manifest  # noqa: E402

# Shaped as llama.cpp can hold them: every Qwen3-MoE layer sparse, with the top-k weights
# renormalised (llama.cpp's qwen3moe graph); Mixtral without a sliding window (GGUF's
# `llama` has none); vocabularies that hold the test tokenizer (byte tokens and merges).
FAMILIES = {
    "qwen3": tiny_qwen3(),
    "qwen3_moe": {**tiny_qwen3_moe(), "mlp_only_layers": [], "norm_topk_prob": True},
    "mixtral": {
        **{k: v for k, v in tiny_mixtral().items() if k != "sliding_window"},
        "vocab_size": 320,
    },
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `reference/` (the transformers model) and `model.gguf` (F32)."""
    return family_folder(tmp_path_factory.mktemp(request.param), request.param, FAMILIES)


def _verify(out: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(["verify", str(out), "--reference", str(reference)])
    report = capsys.readouterr().out
    assert code == 0, report
    return report


def test_the_test_writer_writes_what_transformers_reads_back(family: Path) -> None:
    """An independent check of `gguf_writer`'s names and layouts: transformers' GGUF
    loader (which has no Mixtral mapping; its Llama permutation is checked below) reads
    every tensor back to the original."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if family.joinpath("model.txt").read_text() == "mixtral":
        pytest.skip("transformers' GGUF loader does not map Mixtral")
    auto: Any = __import__("transformers").AutoModelForCausalLM
    model = auto.from_pretrained(family / "reference", dtype=torch.float32)
    loaded = load_gguf_checkpoint(str(family / "model.gguf"), return_tensors=True,
                                  model_to_load=model)["tensors"]
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), tensor.numpy(), err_msg=key)


def test_llama_rope_permutation_is_undone_as_transformers_undoes_it() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = np.random.default_rng(0).standard_normal((4 * 16, 24)).astype(np.float32)
    permuted = permute_rope_rows(weight, 4)
    assert not np.array_equal(permuted, weight)
    undone = gguf_file.unpermute_rope_rows(permuted, 4)
    np.testing.assert_array_equal(undone, weight)
    theirs = LlamaTensorProcessor()._reverse_permute_weights(permuted, 4, 4)
    np.testing.assert_array_equal(undone, theirs)


def test_a_gguf_exports_and_matches_its_model_exactly(
    family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert main(["onnx", "--model", str(family / "model.gguf"), "--out", str(out)]) == 0
    manifest = load_manifest(out)  # every file's sha256 checked
    name = family.joinpath("model.txt").read_text()
    assert manifest.architecture == name
    assert manifest.name == f"tiny-{name}"  # general.name
    assert manifest.licence == "apache-2.0 (from the GGUF file's general.license)"
    assert manifest.tokenizer == "tokenizer.json" and manifest.prompt is not None
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == FAMILIES[name]["vocab_size"]
    report = _verify(out, family / "reference", capsys)
    assert "greedy tokens identical: yes" in report, report


@pytest.mark.parametrize(("quant", "precision"), [("Q8_0", "int8"), ("Q4_0", "int4")])
def test_quantised_blocks_carry_over(
    quant: str, precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Q8_0 / Q4_0 file at int8 / int4 (blocks of 32 with one scale, as ggml's) passes
    verify against a transformers model holding the file's dequantised weights (the
    weights are the file's own, `test_ggml_blocks_requantise_to_themselves`; the kernel
    quantises activations, which costs the rest)."""
    # Every row whole blocks of 32, so that nothing stays F32.
    config = {**FAMILIES["qwen3_moe"], "hidden_size": 64, "moe_intermediate_size": 32}
    model = random_model(config)
    path = write_gguf(model, tmp_path / "model.gguf", quant)
    gguf = gguf_file.GgufFile(path)
    assert gguf.type_of("model.layers.0.self_attn.q_proj.weight") == quant
    weights = gguf_file.GgufWeights(gguf)
    state = {
        key: torch.from_numpy(weights(key.removesuffix(".weight")
                                      if ".experts." in key else key).copy())
        for key in model.state_dict()
    }
    model.load_state_dict(state)
    model.save_pretrained(tmp_path / "dequantised")
    out = tmp_path / precision
    args = ["onnx", "--model", str(path), "--out", str(out), "--precision", precision]
    assert main(args) == 0
    report = _verify(out, tmp_path / "dequantised", capsys)
    assert "verify: passed" in report


@pytest.mark.parametrize(("quant", "bits"), [("Q8_0", 8), ("Q4_0", 4)])
def test_ggml_blocks_requantise_to_themselves(quant: str, bits: int) -> None:
    """Dequantised q8_0 / q4_0 blocks come back from `export.quantize` as the same values:
    carried over block for block, nothing lost twice."""
    import gguf

    from export import quantize

    qtype = gguf.GGMLQuantizationType[quant]
    weight = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    weight[3, :32] = 0.0  # an all-zero block
    values = gguf.quants.dequantize(gguf.quants.quantize(weight, qtype), qtype)
    again = quantize.dequantize(quantize.quantize(values, bits, 32))
    np.testing.assert_array_equal(again, values)


def test_an_ollama_model_exports_by_name(
    family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model ollama:NAME:TAG`: the blob (no .gguf suffix) found through the manifest."""
    if family.joinpath("model.txt").read_text() != "qwen3":
        pytest.skip("one family is enough for the store")
    ollama = tmp_path / "ollama"
    digest = "sha256:" + "ab" * 32
    blob = ollama / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True)
    blob.write_bytes((family / "model.gguf").read_bytes())
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "1b"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": gguf_stores.OLLAMA_MODEL_LAYER, "digest": digest}
    manifest.write_text(json.dumps({"layers": [layer]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    out = tmp_path / "model"
    assert main(["onnx", "--model", "ollama:tiny:1b", "--out", str(out)]) == 0
    assert load_manifest(out).architecture == "qwen3"
    assert main(["onnx", "--model", "ollama:tiny:7b", "--out", str(out)]) != 0


def test_what_cannot_be_exported_is_named(tmp_path: Path) -> None:
    import gguf

    dense = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(dense), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["a", "b"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ExportError, match="a dense Llama GGUF is not supported yet"):
        gguf_config.hf_config(gguf_file.GgufFile(dense))
    phi = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(str(phi), "phi3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ExportError, match="architecture 'phi3' is not supported"):
        gguf_file.GgufFile(phi)
    assert main(["onnx", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) != 0
