"""A GGUF file's metadata as the Hugging Face config it stands for (`hf_config`): one
builder per llama.cpp architecture, keys the file lacks taken at transformers' defaults.
Split from `export.gguf_file`, which reads the file itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from export.errors import ExportError, UnsupportedArchitecture

if TYPE_CHECKING:
    from export.gguf_file import GgufFile

ROPE_FREQS = "rope_freqs.weight"
"""Llama 3's and Gemma 4's per-dimension RoPE frequency factors, stored as a tensor."""

def _common_config(gguf: GgufFile, model_type: str) -> dict[str, Any]:
    """The keys every llama-like family shares, from `{arch}.*` metadata."""
    heads = int(gguf.arch("attention.head_count"))
    hidden = int(gguf.arch("embedding_length"))
    if gguf.metadata.get(f"{gguf.architecture}.rope.scaling.type", "none") not in ("none", ""):
        raise ExportError(
            f"{gguf.path}: RoPE scaling "
            f"{gguf.metadata[f'{gguf.architecture}.rope.scaling.type']!r} in a GGUF file is "
            "not supported yet"
        )
    if "rope_freqs.weight" in gguf.unmapped:
        raise ExportError(
            f"{gguf.path}: per-frequency RoPE factors (rope_freqs, Llama 3.1's long-context "
            "scaling) are not supported yet"
        )
    return {
        "model_type": model_type,
        "vocab_size": len(gguf.field("tokenizer.ggml.tokens")),
        "hidden_size": hidden,
        "num_hidden_layers": int(gguf.arch("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(gguf.arch("attention.head_count_kv", heads)),
        "head_dim": int(gguf.arch("attention.key_length", hidden // heads)),
        "max_position_embeddings": int(gguf.arch("context_length")),
        "rms_norm_eps": float(gguf.arch("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(gguf.arch("rope.freq_base", 10_000.0)),
        "hidden_act": "silu",
        "tie_word_embeddings": "lm_head.weight" not in gguf.tensor_keys(),
    }


def _qwen3_config(gguf: GgufFile) -> dict[str, Any]:
    return {**_common_config(gguf, "qwen3"),
            "intermediate_size": int(gguf.arch("feed_forward_length"))}


def _qwen3moe_config(gguf: GgufFile) -> dict[str, Any]:
    """Qwen3-MoE: every layer sparse; llama.cpp normalises the top-k weights (its
    `qwen3moe` graph), as the released configs' `norm_topk_prob` does."""
    config = _common_config(gguf, "qwen3_moe")
    experts = int(gguf.arch("expert_count"))
    return {
        **config,
        "num_experts": experts,
        "num_experts_per_tok": int(gguf.arch("expert_used_count")),
        "moe_intermediate_size": int(gguf.arch("expert_feed_forward_length")),
        "intermediate_size": int(gguf.arch("feed_forward_length", 1)),
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    }


def _llama_config(gguf: GgufFile) -> dict[str, Any]:
    """llama.cpp's `llama` architecture with experts is Mixtral (softmax, top-k,
    renormalised); a dense Llama is not an `export` family yet."""
    experts = int(gguf.metadata.get("llama.expert_count", 0) or 0)
    if experts == 0:
        raise ExportError(
            f"{gguf.path}: a dense Llama GGUF is not supported yet (llama.cpp architecture "
            "'llama' is read when it has experts: Mixtral)"
        )
    config = _common_config(gguf, "mixtral")
    return {
        **config,
        "num_local_experts": experts,
        "num_experts_per_tok": int(gguf.arch("expert_used_count")),
        "intermediate_size": int(gguf.arch("feed_forward_length")),
    }


def hf_config(gguf: GgufFile) -> dict[str, Any]:
    """The Hugging Face config (the `export` family's keys) a GGUF file stands for."""
    builders = {
        "gemma3": gemma3_config,
        "gemma4": gemma4_config,
        "qwen3": _qwen3_config,
        "qwen3moe": _qwen3moe_config,
        "llama": _llama_config,
    }
    return builders[gguf.architecture](gguf)


def gemma3_config(gguf: GgufFile) -> dict[str, Any]:
    """The Hugging Face `gemma3_text` config a GGUF file's metadata stands for. Keys the
    file does not carry take transformers' defaults (`query_pre_attn_scalar` 256, the local
    RoPE base 10,000, five sliding layers to one full)."""
    layers = int(gguf.arch("block_count"))
    pattern = 6
    vocab = len(gguf.field("tokenizer.ggml.tokens"))
    return {
        "model_type": "gemma3_text",
        "architectures": ["Gemma3ForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": int(gguf.arch("embedding_length")),
        "intermediate_size": int(gguf.arch("feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": int(gguf.arch("attention.head_count")),
        "num_key_value_heads": int(gguf.arch("attention.head_count_kv")),
        "head_dim": int(gguf.arch("attention.key_length")),
        "max_position_embeddings": int(gguf.arch("context_length")),
        "rms_norm_eps": float(gguf.arch("attention.layer_norm_rms_epsilon")),
        "sliding_window": int(gguf.arch("attention.sliding_window")),
        "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": "lm_head.weight" not in gguf.tensor_keys(),
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "layer_types": [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
            for i in range(layers)
        ],
        "rope_parameters": {
            "full_attention": {
                "rope_type": "default",
                "rope_theta": float(gguf.arch("rope.freq_base")),
            },
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }


def gemma4_config(gguf: GgufFile) -> dict[str, Any]:
    """The Hugging Face `gemma4_text` config of a llama.cpp `gemma4` file (the keys
    `conversion/gemma.py` Gemma4Model writes). Sliding and full layers by
    `attention.sliding_window_pattern`; their head sizes by `attention.key_length_swa` and
    `attention.key_length`, their KV heads by the per-layer `attention.head_count_kv`; K=V
    where the full layers have no `attn_v`; the full layers' proportional RoPE from
    `rope_freqs` (1 for each rotating frequency, 1e30 for each that stands still)."""
    layers = int(gguf.arch("block_count"))
    pattern = [bool(s) for s in _per_layer(gguf, "attention.sliding_window_pattern", layers)]
    kinds = ["sliding_attention" if s else "full_attention" for s in pattern]
    kv_heads = [int(h) for h in _per_layer(gguf, "attention.head_count_kv", layers)]
    full_dim = int(gguf.arch("attention.key_length"))
    sliding_dim = int(gguf.arch("attention.key_length_swa", full_dim))
    by_kind = list(zip(kv_heads, pattern, strict=True))
    sliding_kv = _one_value(gguf, "sliding", [h for h, sliding in by_kind if sliding])
    full_kv = _one_value(gguf, "full", [h for h, sliding in by_kind if not sliding])
    full = [i for i, s in enumerate(pattern) if not s]
    has_v = {gguf.has(f"model.layers.{i}.self_attn.v_proj.weight") for i in full}
    if len(has_v) > 1:
        raise ExportError(f"{gguf.path}: some full-attention layers have attn_v, some not")
    k_eq_v = has_v == {False}
    if not k_eq_v and full_kv not in (None, sliding_kv):
        raise UnsupportedArchitecture(
            f"{gguf.path}: full-attention layers with V and {full_kv} KV heads beside "
            f"sliding layers with {sliding_kv} are not a Gemma4TextConfig"
        )
    rotary_swa = int(gguf.arch("rope.dimension_count_swa", sliding_dim))
    if rotary_swa != sliding_dim:
        raise UnsupportedArchitecture(
            f"{gguf.path}: sliding layers rotating {rotary_swa} of {sliding_dim} dims "
            "(gemma4.rope.dimension_count_swa) are not supported yet"
        )
    config: dict[str, Any] = {
        "model_type": "gemma4_text",
        "architectures": ["Gemma4ForCausalLM"],
        "vocab_size": len(gguf.field("tokenizer.ggml.tokens")),
        "hidden_size": int(gguf.arch("embedding_length")),
        "intermediate_size": _one_value(
            gguf, "every", [int(n) for n in _per_layer(gguf, "feed_forward_length", layers)]
        ),
        "num_hidden_layers": layers,
        "num_attention_heads": _one_value(
            gguf, "every", [int(n) for n in _per_layer(gguf, "attention.head_count", layers)]
        ),
        "num_key_value_heads": sliding_kv or full_kv,
        "num_global_key_value_heads": full_kv or sliding_kv,
        "head_dim": sliding_dim,
        "global_head_dim": full_dim,
        "attention_k_eq_v": k_eq_v,
        "hidden_activation": "gelu_pytorch_tanh",  # ggml's GELU (tanh), gemma4 graph
        "sliding_window": int(gguf.arch("attention.sliding_window")),
        "max_position_embeddings": int(gguf.arch("context_length")),
        "final_logit_softcapping": _float32(gguf.metadata.get("gemma4.final_logit_softcapping")),
        "rms_norm_eps": _float32(gguf.arch("attention.layer_norm_rms_epsilon")),
        "tie_word_embeddings": not gguf.has("lm_head.weight"),
        # Per-layer embeddings (E2B/E4B) and KV sharing: carried for the family reader,
        # which names them when it refuses them.
        "hidden_size_per_layer_input": int(gguf.arch("embedding_length_per_layer_input", 0)),
        "num_kv_shared_layers": int(gguf.arch("attention.shared_kv_layers", 0)),
        "layer_types": kinds,
        "rope_parameters": {
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": float(gguf.arch("rope.freq_base_swa", 10_000.0)),
            },
            "full_attention": {
                "rope_type": "proportional",
                "rope_theta": float(gguf.arch("rope.freq_base", 1_000_000.0)),
                "partial_rotary_factor": _proportional_factor(gguf, full_dim),
            },
        },
        **_gemma4_special_tokens(gguf),
    }
    experts = int(gguf.arch("expert_count", 0))
    if experts:
        config |= {
            "enable_moe_block": True,
            "num_experts": experts,
            "top_k_experts": int(gguf.arch("expert_used_count")),
            "moe_intermediate_size": int(gguf.arch("expert_feed_forward_length")),
        }
    return config


def _float32(value: float | None) -> float | None:
    """A float32 metadata value as the shortest decimal that is it (1e-06, not
    9.99999997e-07): what the config it was written from said."""
    return None if value is None else float(str(np.float32(value)))


def _per_layer(gguf: GgufFile, key: str, layers: int) -> list[Any]:
    """`{arch}.{key}` as one value per layer: an array as it is, a scalar repeated."""
    value = gguf.arch(key)
    values = list(value) if isinstance(value, list) else [value] * layers
    if len(values) != layers:
        raise ExportError(
            f"{gguf.path}: {gguf.architecture}.{key} has {len(values)} entries for "
            f"{layers} layers"
        )
    return values


def _one_value(gguf: GgufFile, which: str, values: list[int]) -> int | None:
    """The one value `which` layers share (None when there are none of them)."""
    if len(set(values)) > 1:
        raise UnsupportedArchitecture(
            f"{gguf.path}: {which} layers differ in a size ({sorted(set(values))}); "
            "per-layer sizes are not supported yet"
        )
    return values[0] if values else None


def _proportional_factor(gguf: GgufFile, head_dim: int) -> float:
    """Gemma 4's `partial_rotary_factor` of the full layers from `rope_freqs` (head_dim / 2
    factors: 1 for the frequencies that rotate, 1e30 for the rest, `Gemma4Model.
    generate_extra_tensors`); 1 (every frequency rotates) when the file has none."""
    factors = gguf.config_tensor(ROPE_FREQS)
    if factors is None:
        return 1.0
    rotating = int(np.argmax(factors != 1.0)) if (factors != 1.0).any() else len(factors)
    if len(factors) != head_dim // 2 or not (factors[rotating:] >= 1e20).all():
        raise UnsupportedArchitecture(
            f"{gguf.path}: rope_freqs is not Gemma 4's proportional RoPE (head_dim / 2 = "
            f"{head_dim // 2} factors, 1 then 1e30): {factors[:8].tolist()} ..."
        )
    return 2 * rotating / head_dim


def _gemma4_special_tokens(gguf: GgufFile) -> dict[str, int]:
    """pad, eos and bos ids from the tokenizer metadata, where the file has them."""
    ids = {}
    for name, key in (("pad", "padding"), ("eos", "eos"), ("bos", "bos")):
        found = gguf.optional_field(f"tokenizer.ggml.{key}_token_id")
        if found is not None:
            ids[f"{name}_token_id"] = int(found)
    return ids
