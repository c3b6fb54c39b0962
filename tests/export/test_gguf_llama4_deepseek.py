"""Llama 4 and DeepSeek-V3 as GGUF (llama.cpp's `llama4` and `deepseek2`): tiny random
transformers models written the way llama.cpp's converter writes them (`gguf_writer`: Llama
4's experts transposed and split, llama3 RoPE as `rope_freqs`; DeepSeek's MLA sizes as an
MQA view, `kv_b_proj` split per head), read back to the config and tensors they came from,
exported and verified against the model.

What llama.cpp's format does not carry, its loader fixes (Llama 4's 8,192-token chunks,
attention temperature floor 8,192, llama3 RoPE over 8,192 original positions): the Llama 4
model here is shaped so (`LLAMA4`); what the exporter cannot follow is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_configs import tiny_deepseek_r1, tiny_deepseek_v3, tiny_llama4

REASON = "the export extra is not installed: pip install -e '.[export]'"
gguf = pytest.importorskip("gguf", reason=REASON)
torch = pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)

from gguf_writer import assert_llama_cpp_matches, family_folder, write_gguf  # noqa: E402

from export import gguf_config, gguf_file  # noqa: E402
from export.checkpoint import checkpoint_shapes  # noqa: E402
from export.cli import main  # noqa: E402
from export.errors import ExportError, UnsupportedArchitecture  # noqa: E402
from export.families import spec_from_config  # noqa: E402
from export.reference import random_model, weights_of  # noqa: E402
from subtitled.translate.manifest import load_manifest  # noqa: E402


def _llama4() -> dict[str, Any]:
    """Llama 4 Scout's shape family as a GGUF file holds it: llama.cpp fixes the chunk and
    the temperature floor at 8,192 and the converter the llama3 original context."""
    config = tiny_llama4() | {
        "attention_chunk_size": 8192,
        "floor_scale": 8192,
        "max_position_embeddings": 16384,
    }
    config["rope_parameters"] = config["rope_parameters"] | {
        "original_max_position_embeddings": 8192
    }
    return config


FAMILIES = {
    "llama4_text": _llama4(),
    "deepseek_v3": tiny_deepseek_v3(),
    "deepseek_r1": tiny_deepseek_r1(),  # YaRN with mscale
}


@pytest.mark.parametrize(
    ("arch", "name", "key"),
    [
        ("llama4", "blk.1.ffn_gate_inp.weight", "model.layers.1.feed_forward.router.weight"),
        ("llama4", "blk.1.ffn_up_exps.weight",
         "model.layers.1.feed_forward.experts.up_proj.weight"),
        ("llama4", "blk.1.ffn_down_shexp.weight",
         "model.layers.1.feed_forward.shared_expert.down_proj.weight"),
        ("llama4", "blk.0.ffn_gate.weight", "model.layers.0.feed_forward.gate_proj.weight"),
        ("llama4", "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
        ("deepseek2", "blk.0.attn_q_a.weight", "model.layers.0.self_attn.q_a_proj.weight"),
        ("deepseek2", "blk.0.attn_q_a_norm.weight",
         "model.layers.0.self_attn.q_a_layernorm.weight"),
        ("deepseek2", "blk.0.attn_kv_a_mqa.weight",
         "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"),
        ("deepseek2", "blk.0.attn_kv_a_norm.weight",
         "model.layers.0.self_attn.kv_a_layernorm.weight"),
        ("deepseek2", "blk.0.attn_kv_b.weight", "model.layers.0.self_attn.kv_b_proj.weight"),
        ("deepseek2", "blk.0.attn_k_b.weight", "model.layers.0.self_attn.k_b_proj.weight"),
        ("deepseek2", "blk.2.exp_probs_b.bias", "model.layers.2.mlp.gate.e_score_correction_bias"),
        ("deepseek2", "blk.2.ffn_gate_shexp.weight",
         "model.layers.2.mlp.shared_experts.gate_proj.weight"),
        ("deepseek2", "blk.2.ffn_gate_inp.weight", "model.layers.2.mlp.gate.weight"),
    ],
)
def test_llama_cpp_names_map_both_ways(arch: str, name: str, key: str) -> None:
    """llama.cpp's names (gguf `constants.py` MODEL_TENSORS, `tensor_mapping.py`)."""
    names = gguf_file.TENSOR_NAMES[arch]
    assert gguf_file.hf_key(name, names) == key
    assert gguf_file.gguf_name(key, names) == name


@pytest.mark.parametrize("name", ["blk.0.attn_k.weight", "blk.0.attn_q_norm.weight"])
def test_deepseek2_has_no_place_for_plain_attention(name: str) -> None:
    """MLA has no k_proj / q_norm: such a tensor is left unmapped (and so refused), never
    silently dropped."""
    with pytest.raises(ExportError, match="no known Hugging Face name"):
        gguf_file.hf_key(name, gguf_file.TENSOR_NAMES["deepseek2"])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `reference/` (the transformers model) and `model.gguf` (F32)."""
    return family_folder(tmp_path_factory.mktemp(request.param), request.param, FAMILIES)


def _model(family: Path) -> Any:
    auto: Any = __import__("transformers").AutoModelForCausalLM
    return auto.from_pretrained(family / "reference", dtype=torch.float32)


def test_the_file_reads_back_as_the_config_and_tensors_it_was_written_from(
    family: Path,
) -> None:
    config = FAMILIES[family.joinpath("model.txt").read_text()]
    file = gguf_file.GgufFile(family / "model.gguf")
    assert file.unmapped == []
    spec = spec_from_config(config)
    assert spec_from_config(gguf_config.hf_config(file)) == spec
    weights, original = gguf_file.GgufWeights(file), weights_of(_model(family))
    for key in checkpoint_shapes(spec):
        np.testing.assert_array_equal(weights(key), original(key), err_msg=key)


def test_a_gguf_exports_and_matches_its_model_exactly(
    family: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    assert main(["onnx", "--model", str(family / "model.gguf"), "--out", str(out)]) == 0
    name = family.joinpath("model.txt").read_text()
    manifest = load_manifest(out)  # every file's sha256 checked
    assert manifest.architecture == FAMILIES[name]["model_type"]
    assert manifest.tokenizer == "tokenizer.json" and manifest.prompt is not None
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 320
    capsys.readouterr()
    code = main(["verify", str(out), "--reference", str(family / "reference")])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "greedy tokens identical: yes" in report, report


@pytest.mark.parametrize(
    ("name", "precision"), [("llama4_text", "int8"), ("deepseek_v3", "fp32")]
)
def test_quantised_blocks_carry_over(
    name: str, precision: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Q8_0 file (blocks of 32 with one scale, as ggml's; rows that are not whole blocks
    stay F32, as llama.cpp keeps them) passes verify against a transformers model holding
    the file's dequantised weights. DeepSeek at fp32, exactly: an int8 export of this tiny
    DeepSeek-V3 fails verify from its safetensors too (measured: logit cosine min 0.57,
    top-1 79.7%; its grouped sigmoid routing flips under int8 activations)."""
    model = random_model(FAMILIES[name])
    path = write_gguf(model, tmp_path / "model.gguf", "Q8_0")
    file = gguf_file.GgufFile(path)
    assert file.type_of("model.layers.1.self_attn.o_proj.weight") == "Q8_0"
    expert = "feed_forward" if name == "llama4_text" else "mlp"
    assert file.type_of(f"model.layers.1.{expert}.experts.down_proj.weight") == "Q8_0"
    if name == "deepseek_v3":  # the split kv_b_proj: V's rows (kv_lora_rank 32) quantised
        assert file.type_of("model.layers.0.self_attn.v_b_proj.weight") == "Q8_0"
    weights = gguf_file.GgufWeights(file)
    model.load_state_dict(
        {key: torch.from_numpy(weights(key.removesuffix(".weight") if ".experts." in key
                                       else key).copy())
         for key in model.state_dict()}
    )
    model.save_pretrained(tmp_path / "dequantised")
    out = tmp_path / precision
    args = ["onnx", "--model", str(path), "--out", str(out), "--precision", precision]
    assert main(args) == 0
    capsys.readouterr()
    code = main(["verify", str(out), "--reference", str(tmp_path / "dequantised")])
    report = capsys.readouterr().out
    assert code == 0 and "verify: passed" in report, report
    if precision == "fp32":
        assert "greedy tokens identical: yes" in report, report


def test_an_older_deepseek_file_with_kv_b_whole_reads_the_same(tmp_path: Path) -> None:
    """Converters before llama.cpp's absorbed MLA kept `attn_kv_b` and wrote the per-head
    sizes as key/value_length (no `*_mla` keys, head_count_kv = head_count)."""
    config = FAMILIES["deepseek_r1"]
    model = random_model(config)
    path = write_gguf(model, tmp_path / "old.gguf", split_kv_b=False)
    file = gguf_file.GgufFile(path)
    assert "model.layers.0.self_attn.kv_b_proj.weight" in file.tensor_keys()
    assert "deepseek2.attention.key_length_mla" not in file.metadata
    assert spec_from_config(gguf_config.hf_config(file)) == spec_from_config(config)
    weights, original = gguf_file.GgufWeights(file), weights_of(model)
    for key in checkpoint_shapes(spec_from_config(config)):
        np.testing.assert_array_equal(weights(key), original(key), err_msg=key)


def test_the_kv_b_split_is_joined_back_per_head() -> None:
    """`DeepseekV2Model.modify_tensors` read backwards: per head, nope rows of K then V."""
    heads, nope, v, rank = 3, 4, 5, 6
    kv_b = np.arange(heads * (nope + v) * rank, dtype=np.float32).reshape(-1, rank)
    per_head = kv_b.reshape(heads, nope + v, rank)
    k_b, v_b = per_head[:, :nope].transpose(0, 2, 1), per_head[:, nope:]
    np.testing.assert_array_equal(gguf_file.join_kv_b(k_b, v_b), kv_b)
    with pytest.raises(ExportError, match="not one kv_b_proj split"):
        gguf_file.join_kv_b(k_b, v_b[:, :, 1:])


class _Factors:
    """A stand-in for `GgufFile` that holds only a `rope_freqs` tensor."""

    path = Path("test.gguf")

    def __init__(self, factors: np.ndarray | None) -> None:
        self.factors = factors

    def config_tensor(self, name: str) -> np.ndarray | None:
        assert name == gguf_config.ROPE_FREQS
        return self.factors


@pytest.mark.parametrize(
    ("theta", "head_dim", "factor", "low", "high"),
    [
        (500_000.0, 128, 8.0, 1.0, 4.0),  # Llama 3.1
        (500_000.0, 128, 16.0, 1.0, 1.0),  # Llama 4 Scout: no blend
        (500_000.0, 16, 8.0, 1.0, 4.0),  # the tiny model here: one blended factor
        (500_000.0, 128, 32.0, 2.0, 8.0),  # neither: fitted to the blended factors
    ],
)
def test_llama3_rope_is_recovered_from_its_factors(
    theta: float, head_dim: int, factor: float, low: float, high: float
) -> None:
    original = gguf_config.LLAMA3_ORIGINAL_CONTEXT
    factors = gguf_config.llama3_rope_factors(theta, head_dim, factor, low, high, original)
    file: Any = _Factors(factors)
    rope = gguf_config.llama3_rope_parameters(file, theta, head_dim)
    assert rope == {
        "rope_type": "llama3",
        "rope_theta": theta,
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original,
    }


def test_rope_freqs_that_are_not_llama3_scaling_are_refused() -> None:
    plain: Any = _Factors(None)
    assert gguf_config.llama3_rope_parameters(plain, 1e4, 16)["rope_type"] == "default"
    ones: Any = _Factors(np.ones(8, np.float32))
    assert gguf_config.llama3_rope_parameters(ones, 1e4, 16)["rope_type"] == "default"
    odd: Any = _Factors(np.array([1, 3, 1, 2, 1, 1, 1, 1], np.float32))
    with pytest.raises(UnsupportedArchitecture, match=r"rope_freqs .* is not llama3"):
        gguf_config.llama3_rope_parameters(odd, 1e4, 16)


def _edited(source: Path, target: Path, changes: dict[str, Any]) -> Path:
    """`source` rewritten with metadata `changes` (None: the key removed)."""
    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(target), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in changes:
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, kind)
    for key, value in changes.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(tensor.shape))
        writer.add_tensor(tensor.name, np.asarray(tensor.data).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("deepseek_v3", {"deepseek2.expert_gating_func": None}, "expert_gating_func = 0"),
        ("deepseek_v3", {"deepseek2.expert_gating_func": 1}, "only DeepSeek-V3's sigmoid"),
        ("deepseek_v3", {"deepseek2.attention.temperature_scale": 0.1},
         "attention.temperature_scale"),
        ("deepseek_v3", {"deepseek2.nextn_predict_layers": 1}, "nextn_predict_layers"),
        ("deepseek_v3", {"deepseek2.rope.scaling.type": "linear"}, "'linear' is not supported"),
        ("deepseek_r1", {"deepseek2.rope.scaling.yarn_attn_factor": 0.5}, "yarn_attn_factor"),
        ("llama4_text", {"llama4.attention.sliding_window": 0}, "sliding_window = 0"),
        ("llama4_text", {"llama4.expert_count": 0}, "without experts"),
        ("llama4_text", {"llama4.rope.freq_base_swa": 10000.0}, "freq_base_swa"),
    ],
)
def test_what_llama_cpp_files_say_that_export_cannot_follow_is_named(
    name: str, changes: dict[str, Any], message: str, tmp_path: Path
) -> None:
    source = write_gguf(random_model(FAMILIES[name]), tmp_path / "model.gguf")
    edited = _edited(source, tmp_path / "edited.gguf", changes)
    with pytest.raises(UnsupportedArchitecture, match=message):
        gguf_config.hf_config(gguf_file.GgufFile(edited))


def test_llama_cpp_runs_the_file_as_transformers_does(family: Path) -> None:
    """An independent reader of the test writer's files: llama.cpp loads each and its
    logits are the transformers model's up to float rounding, 24 tokens."""
    tokens = [261, *np.random.default_rng(3).integers(5, 256, 23).tolist()]
    assert_llama_cpp_matches(family / "model.gguf", _model(family), tokens)
