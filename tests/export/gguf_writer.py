"""Tiny GGUF files written from a transformers model the way llama.cpp's
`convert_hf_to_gguf.py` (now `conversion/*.py`) writes them (names, metadata, Llama's q/k row
permutation, experts as one 3-D tensor per projection, Gemma's 1 + w norms), for tests of
`export.gguf_file`.

Llama 4 (`conversion/llama4.py` Llama4Model): `experts.gate_up_proj` (E, H, 2F) transposed
and split into gate and up, `experts.down_proj` (E, F, H) transposed, q and k as they are,
llama3 RoPE scaling as `rope_freqs` factors. DeepSeek-V3 (`conversion/deepseek.py`
DeepseekV2Model): MLA sizes as the absorbed MQA view (key_length kv_lora_rank + rope, the
per-head sizes as `*_mla`), `kv_b_proj` split per head into `attn_k_b` (transposed) and
`attn_v_b`, or kept whole as older converters did (`split_kv_b=False`).

The writer is the `gguf` package's own; tensors are stored as F32 or quantised with its
`quants.quantize` (Q8_0, Q4_0, Q4_1, F16, BF16: the types it can write).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# transformers key suffix -> llama.cpp name, for llama-like layers.
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
}
# gguf's `tensor_mapping.py`, the entries marked llama4 and deepseek2.
_LLAMA4_LAYER = {
    **{k: v for k, v in _LAYER.items() if not k.startswith("mlp.")},
    "feed_forward.gate_proj.weight": "ffn_gate.weight",
    "feed_forward.up_proj.weight": "ffn_up.weight",
    "feed_forward.down_proj.weight": "ffn_down.weight",
    "feed_forward.router.weight": "ffn_gate_inp.weight",
    "feed_forward.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "feed_forward.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "feed_forward.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
}
_DEEPSEEK2_LAYER = {
    **_LAYER,
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.kv_b_proj.weight": "attn_kv_b.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
}
_LAYERS = {
    "qwen3": _LAYER,
    "qwen3moe": _LAYER,
    "llama": _LAYER,
    "llama4": _LLAMA4_LAYER,
    "deepseek2": _DEEPSEEK2_LAYER,
}
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd",
    "model.norm.weight": "output_norm",
    "lm_head.weight": "output",
}
ARCH = {
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3moe",
    "mixtral": "llama",
    "llama4_text": "llama4",
    "deepseek_v3": "deepseek2",
}
# The converter reads llama3 RoPE's original context from the config's top level, where
# Llama 3 and 4 configs do not keep it (LlamaModel.generate_extra_tensors).
_LLAMA3_DEFAULT_CONTEXT = 8192
_SIGMOID = 2  # gguf.ExpertGatingFuncType.SIGMOID


def permute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """`convert_hf_to_gguf.py`'s `LlamaModel.permute`."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_rope_freqs(config: Any) -> np.ndarray | None:
    """`LlamaModel.generate_extra_tensors`: per frequency, 1 (short wavelengths), `factor`
    (long) or a blend, in float32 as torch computes them; None without llama3 scaling."""
    import torch

    rope = config.rope_parameters
    if rope.get("rope_type") != "llama3":
        return None
    dim = config.head_dim
    freqs = 1.0 / (rope.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    original = config.to_dict().get("original_max_position_embeddings", _LLAMA3_DEFAULT_CONTEXT)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < original / high:
            factors.append(1.0)
        elif wavelen > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(float(1 / ((1 - smooth) / factor + smooth)))
    return np.array(factors, np.float32)


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: a byte-level BPE vocabulary with no merges."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _experts(
    out: dict[str, np.ndarray], index: str, rest: str, value: np.ndarray, arch: str
) -> bool:
    """The fused expert tables as llama.cpp's per-projection (E, out, in) tensors."""
    if rest.endswith("experts.gate_up_proj"):
        if arch == "llama4":  # (E, H, 2F) -> (E, 2F, H)
            value = value.transpose(0, 2, 1)
        half = value.shape[1] // 2  # gate rows, then up rows
        out[f"blk.{index}.ffn_gate_exps.weight"] = value[:, :half]
        out[f"blk.{index}.ffn_up_exps.weight"] = value[:, half:]
        return True
    if rest.endswith("experts.down_proj"):
        out[f"blk.{index}.ffn_down_exps.weight"] = (
            value.transpose(0, 2, 1) if arch == "llama4" else value  # (E, H, F)
        )
        return True
    return False


def _split_kv_b(
    out: dict[str, np.ndarray], index: str, value: np.ndarray, config: Any
) -> None:
    """DeepseekV2Model.modify_tensors: per head the nope rows of K (transposed) and the
    rows of V."""
    heads, nope = config.num_attention_heads, config.qk_nope_head_dim
    per_head = value.reshape(heads, nope + config.v_head_dim, value.shape[-1])
    out[f"blk.{index}.attn_k_b.weight"] = per_head[:, :nope].transpose(0, 2, 1).copy()
    out[f"blk.{index}.attn_v_b.weight"] = per_head[:, nope:].copy()


def _tensors(model: Any, arch: str, split_kv_b: bool) -> dict[str, np.ndarray]:
    config = model.config
    out: dict[str, np.ndarray] = {}
    layer = _LAYERS[arch]
    for key, tensor in model.state_dict().items():
        value = tensor.float().numpy()
        if key in _GLOBAL:
            out[f"{_GLOBAL[key]}.weight"] = value
            continue
        _, _, index, rest = key.split(".", 3)
        rest = rest.replace("block_sparse_moe.", "mlp.")
        if _experts(out, index, rest, value, arch):
            continue
        if rest == "self_attn.kv_b_proj.weight" and split_kv_b:
            _split_kv_b(out, index, value, config)
            continue
        if arch == "llama" and rest == "self_attn.q_proj.weight":
            value = permute_rope_rows(value, config.num_attention_heads)
        if arch == "llama" and rest == "self_attn.k_proj.weight":
            value = permute_rope_rows(value, config.num_key_value_heads)
        out[f"blk.{index}.{layer[rest]}"] = value
    if arch == "llama4" and (factors := llama3_rope_freqs(config)) is not None:
        out["rope_freqs.weight"] = factors
    return out


def _llama4_metadata(writer: Any, config: Any) -> None:
    """Llama4Model.set_gguf_parameters: `intermediate_size_mlp` is the dense MLP's
    feed_forward_length, `intermediate_size` the experts'."""
    writer.add_feed_forward_length(config.intermediate_size_mlp)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_interleave_moe_layer_step(config.interleave_moe_layer_step)
    writer.add_expert_feed_forward_length(config.intermediate_size)


def _deepseek2_metadata(writer: Any, config: Any, split_kv_b: bool) -> None:
    """DeepseekV2Model.set_gguf_parameters and its base: MLA as MQA (one KV head), the
    router from `scoring_func` (sigmoid in DeepSeek-V3's config.json; transformers'
    DeepseekV3 has no other), YaRN with `yarn_log_mul` = 0.1 * mscale_all_dim. Older
    converters (`split_kv_b=False`) wrote the per-head sizes as key/value_length."""
    import gguf

    rope_dim, nope, v = config.qk_rope_head_dim, config.qk_nope_head_dim, config.v_head_dim
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(1 if split_kv_b else config.num_attention_heads)
    writer.add_expert_count(config.n_routed_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_expert_group_count(config.n_group)
    writer.add_expert_group_used_count(config.topk_group)
    writer.add_expert_gating_func(gguf.ExpertGatingFuncType(_SIGMOID))
    writer.add_leading_dense_block_count(config.first_k_dense_replace)
    if config.q_lora_rank is not None:
        writer.add_q_lora_rank(config.q_lora_rank)
    writer.add_kv_lora_rank(config.kv_lora_rank)
    if split_kv_b:
        writer.add_key_length(config.kv_lora_rank + rope_dim)
        writer.add_value_length(config.kv_lora_rank)
        writer.add_key_length_mla(nope + rope_dim)
        writer.add_value_length_mla(v)
    else:
        writer.add_key_length(nope + rope_dim)
        writer.add_value_length(v)
    writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_expert_shared_count(config.n_shared_experts)
    writer.add_expert_weights_scale(config.routed_scaling_factor)
    if config.norm_topk_prob:
        writer.add_expert_weights_norm(True)
    writer.add_rope_dimension_count(rope_dim)
    rope = config.rope_parameters
    if rope.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        writer.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
        writer.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
        if rope.get("mscale_all_dim") is not None:
            writer.add_rope_scaling_yarn_log_mul(0.1 * rope["mscale_all_dim"])


def _metadata(writer: Any, config: Any, arch: str, split_kv_b: bool) -> None:
    writer.add_name(f"tiny-{config.model_type}")
    writer.add_license("apache-2.0")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    if arch == "llama4":
        _llama4_metadata(writer, config)
        return
    if arch == "deepseek2":
        _deepseek2_metadata(writer, config, split_kv_b)
        return
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_feed_forward_length(config.intermediate_size)
    if config.model_type == "qwen3_moe":
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    if config.model_type == "mixtral":
        writer.add_expert_count(config.num_local_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)


def write_gguf(model: Any, path: Path, quant: str = "F32", split_kv_b: bool = True) -> Path:
    """`model` (Qwen3, Qwen3-MoE, Mixtral, Llama 4 text or DeepSeek-V3 from transformers) as
    a GGUF file; matrices quantised to `quant`, vectors (norms, biases, `rope_freqs`) kept
    F32 as llama.cpp keeps them."""
    import gguf

    config = model.config
    arch = ARCH[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    _metadata(writer, config, arch, split_kv_b)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n")]
    tokens = byte_tokens() + ["".join(pair) for pair in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += specials + [f"<|extra_{i}|>" for i in range(config.vocab_size - len(tokens) - 3)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    plain = 256 + len(merges)
    writer.add_token_types([1] * plain + [3] * (len(tokens) - plain))
    writer.add_token_merges([" ".join(pair) for pair in merges])
    writer.add_eos_token_id(plain)
    writer.add_bos_token_id(plain)
    qtype = gguf.GGMLQuantizationType[quant]
    for name, value in _tensors(model, arch, split_kv_b).items():
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        if value.ndim == 1 or quant == "F32" or value.shape[-1] % block:
            # llama.cpp too keeps a row that is not whole blocks unquantised
            writer.add_tensor(name, value.astype(np.float32))
            continue
        data = gguf.quants.quantize(value.astype(np.float32), qtype)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_llama_cpp_matches(gguf: Path, model: Any, tokens: list[int]) -> None:
    """llama.cpp (llama-cpp-python, skipped when not installed) runs `gguf` on `tokens` to
    the logits `model` (transformers) gives, up to float rounding: cosine > 0.999 at every
    position and the same top-1."""
    import pytest
    import torch

    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (not a dependency)"
    )
    llm = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=64, logits_all=True, n_threads=1, verbose=False
    )
    llm.eval(tokens)
    theirs = np.array(llm.scores[: len(tokens)], np.float64)
    with torch.no_grad():
        ours = model(torch.tensor([tokens])).logits[0].double().numpy()
    norms = np.linalg.norm(theirs, axis=-1) * np.linalg.norm(ours, axis=-1)
    cosine = (theirs * ours).sum(-1) / norms
    assert cosine.min() > 0.999, cosine
    np.testing.assert_array_equal(theirs.argmax(-1), ours.argmax(-1))


def family_folder(root: Path, name: str, families: dict[str, dict[str, Any]]) -> Path:
    """`root` with `reference/` (a seeded random transformers model of `families[name]`),
    `model.gguf` (it, F32, as llama.cpp's converter writes it) and `model.txt` (`name`)."""
    from export.reference import random_model

    model = random_model(families[name])
    model.save_pretrained(root / "reference")
    write_gguf(model, root / "model.gguf")
    (root / "model.txt").write_text(name)
    return root
