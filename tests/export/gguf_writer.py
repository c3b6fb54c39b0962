"""Tiny GGUF files written from a transformers model the way llama.cpp's
`convert_hf_to_gguf.py` writes them (names, metadata, Llama's q/k row permutation, experts
as one 3-D tensor per projection, Gemma's 1 + w norms), for tests of `export.gguf_file`.

The writer is the `gguf` package's own; tensors are stored as F32 or quantised with its
`quants.quantize` (Q8_0, Q4_0, Q4_1, F16, BF16: the types it can write).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# transformers key suffix -> llama.cpp name, for llama-like layers.
_LAYER = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "attn_q",
    "self_attn.k_proj.weight": "attn_k",
    "self_attn.v_proj.weight": "attn_v",
    "self_attn.o_proj.weight": "attn_output",
    "self_attn.q_norm.weight": "attn_q_norm",
    "self_attn.k_norm.weight": "attn_k_norm",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up",
    "mlp.down_proj.weight": "ffn_down",
    "mlp.gate.weight": "ffn_gate_inp",
}
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd",
    "model.norm.weight": "output_norm",
    "lm_head.weight": "output",
}
ARCH = {"qwen3": "qwen3", "qwen3_moe": "qwen3moe", "mixtral": "llama"}


def permute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """`convert_hf_to_gguf.py`'s `LlamaModel.permute`."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


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


def _tensors(model: Any, arch: str) -> dict[str, np.ndarray]:
    config = model.config
    out: dict[str, np.ndarray] = {}
    for key, tensor in model.state_dict().items():
        value = tensor.float().numpy()
        if key in _GLOBAL:
            out[f"{_GLOBAL[key]}.weight"] = value
            continue
        _, _, index, rest = key.split(".", 3)
        rest = rest.replace("block_sparse_moe.", "mlp.")
        if rest.endswith("experts.gate_up_proj"):  # (E, 2F, H): gate rows then up rows
            half = value.shape[1] // 2
            out[f"blk.{index}.ffn_gate_exps.weight"] = value[:, :half]
            out[f"blk.{index}.ffn_up_exps.weight"] = value[:, half:]
            continue
        if rest.endswith("experts.down_proj"):
            out[f"blk.{index}.ffn_down_exps.weight"] = value
            continue
        if rest == "mlp.gate.weight" and value.ndim == 2:
            out[f"blk.{index}.ffn_gate_inp.weight"] = value
            continue
        if arch == "llama" and rest == "self_attn.q_proj.weight":
            value = permute_rope_rows(value, config.num_attention_heads)
        if arch == "llama" and rest == "self_attn.k_proj.weight":
            value = permute_rope_rows(value, config.num_key_value_heads)
        out[f"blk.{index}.{_LAYER[rest]}.weight"] = value
    return out


def write_gguf(model: Any, path: Path, quant: str = "F32") -> Path:
    """`model` (Qwen3, Qwen3-MoE or Mixtral from transformers) as a GGUF file; matrices
    quantised to `quant`, vectors (norms) kept F32 as llama.cpp keeps them."""
    import gguf

    config = model.config
    arch = ARCH[config.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{config.model_type}")
    writer.add_license("apache-2.0")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    theta = config.rope_parameters["rope_theta"]
    writer.add_rope_freq_base(float(theta))
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
    for name, value in _tensors(model, arch).items():
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
