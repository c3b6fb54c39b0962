"""Tiny Hugging Face configs of every family `export` reads, shaped like the real ones.

Each function returns a fresh dict, so a test may mutate its copy.
"""

from __future__ import annotations

from typing import Any

Config = dict[str, Any]


def tiny_gemma4() -> Config:
    """Gemma 4 26B-A4B's shape family, shrunk: sliding and full layers with different head
    sizes and KV heads, K=V on full layers, proportional RoPE, 8 experts top-2 beside a
    dense MLP, tied embeddings, logit soft-capping."""
    return {
        "model_type": "gemma4_text",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_global_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 32,
        "attention_k_eq_v": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "enable_moe_block": True,
        "num_experts": 8,
        "top_k_experts": 2,
        "moe_intermediate_size": 32,
        "sliding_window": 16,
        "max_position_embeddings": 2048,
        "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {
                "rope_type": "proportional",
                "rope_theta": 1000000.0,
                "partial_rotary_factor": 0.25,
            },
        },
        "layer_types": [
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "full_attention",
        ],
    }


def tiny_gemma3() -> Config:
    """Gemma 3 4B's shape family, shrunk: sliding layers (a window of 8, so verify's
    prompt and decode run past it) around a full one, the last layer sliding, linear RoPE
    scaling on the full layer, one KV head for two query heads, q·k scaled by
    `query_pre_attn_scalar` ** -0.5 with the scalar unlike head_dim, tied embeddings."""
    return {
        "model_type": "gemma3_text",
        "vocab_size": 384,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "query_pre_attn_scalar": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": 8,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
        },
        "layer_types": [
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention",
        ],
    }


def tiny_qwen3_moe() -> Config:
    """Qwen3-MoE with one dense layer (`mlp_only_layers`) and un-normalised top-k."""
    return {
        "model_type": "qwen3_moe",
        "vocab_size": 384,
        "hidden_size": 48,
        "intermediate_size": 80,
        "moe_intermediate_size": 24,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_experts": 6,
        "num_experts_per_tok": 2,
        "mlp_only_layers": [1],
        "norm_topk_prob": False,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }


def tiny_mixtral() -> Config:
    """Mixtral with a sliding window on every layer and head_dim from hidden / heads."""
    return {
        "model_type": "mixtral",
        "vocab_size": 256,
        "hidden_size": 32,
        "intermediate_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 64,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
    }


def tiny_qwen3() -> Config:
    """Dense Qwen3 with tied embeddings."""
    return {
        "model_type": "qwen3",
        "vocab_size": 320,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    }


def tiny_llama4() -> Config:
    """Llama 4 Scout's shape family, shrunk: MoE every other layer (sigmoid top-1 router,
    shared expert), a NoPE layer every 4th with temperature tuning, chunked attention with
    L2 qk-norm on the RoPE layers (a chunk of 8 tokens, so verify crosses chunks), llama3
    RoPE scaling."""
    return {
        "model_type": "llama4_text",
        "vocab_size": 320,
        "hidden_size": 64,
        "intermediate_size": 32,
        "intermediate_size_mlp": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_local_experts": 4,
        "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 2,
        "attention_chunk_size": 8,
        "floor_scale": 4,
        "attn_scale": 0.1,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }


def tiny_deepseek_v3() -> Config:
    """DeepSeek-V3's shape family, shrunk: MLA with q and kv low-rank pairs and interleaved
    RoPE on a shared key, one dense layer then MoE layers with 8 routed experts in 4 groups
    (top-2 groups, top-2 experts), a correction bias, a shared expert, scaled weights."""
    return {
        "model_type": "deepseek_v3",
        "vocab_size": 320,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 1,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        "first_k_dense_replace": 1,
        "q_lora_rank": 48,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "rope_interleave": True,
        "rope_theta": 10000.0,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }


def tiny_deepseek_r1() -> Config:
    """DeepSeek-V3 with the released checkpoints' YaRN RoPE (DeepSeek-R1: factor 40 over
    4,096 original positions, mscale = mscale_all_dim = 1), shrunk so the test's positions
    run far past the original context (factor 16 over 64)."""
    config = tiny_deepseek_v3()
    config.pop("rope_theta")
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 16.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    }
    return config


def tiny_qwen3_yarn() -> Config:
    """Qwen3 with YaRN and no mscale keys: the attention factor scales cos and sin."""
    config = tiny_qwen3()
    config.pop("rope_theta", None)
    config["rope_parameters"] = {
        "rope_type": "yarn",
        "rope_theta": 1000000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    return config


ALL = {
    "gemma3_text": tiny_gemma3,
    "gemma4_text": tiny_gemma4,
    "qwen3_moe": tiny_qwen3_moe,
    "mixtral": tiny_mixtral,
    "qwen3": tiny_qwen3,
    "llama4_text": tiny_llama4,
    "deepseek_v3": tiny_deepseek_v3,
}


def tiny_gemma3_split() -> Config:
    """tiny_gemma3() with each MLP split into 4 routed experts, top-2 (`export.moe_split`):
    expert size 32, the native kernel's block."""
    return tiny_gemma3() | {"num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32}
