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
    """The keys every llama-like family shares, from `{arch}.*` metadata; RoPE without
    scaling."""
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
    return _base_config(gguf, model_type) | {
        "rope_theta": float(gguf.arch("rope.freq_base", 10_000.0)),
    }


def _base_config(gguf: GgufFile, model_type: str) -> dict[str, Any]:
    """Sizes, norms, activation and tying, from `{arch}.*` metadata."""
    heads = int(gguf.arch("attention.head_count"))
    hidden = int(gguf.arch("embedding_length"))
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
        "hidden_act": "silu",
        "tie_word_embeddings": "lm_head.weight" not in gguf.tensor_keys(),
    }


def _float_key(gguf: GgufFile, key: str, default: float) -> float:
    """`{arch}.{key}` as the float32 the file holds, written as its shortest decimal."""
    return _shortest(gguf.arch(key, default))


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
        "llama4": llama4_config,
        "deepseek2": deepseek2_config,
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
        **_special_tokens(gguf),
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
    return None if value is None else _shortest(value)


def _shortest(value: float | np.floating[Any]) -> float:
    """`value` rounded to float32, as the shortest decimal that is that float32."""
    return float(str(np.float32(value)))


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


def _special_tokens(gguf: GgufFile) -> dict[str, int]:
    """pad, eos and bos ids from the tokenizer metadata, where the file has them."""
    ids = {}
    for name, key in (("pad", "padding"), ("eos", "eos"), ("bos", "bos")):
        found = gguf.optional_field(f"tokenizer.ggml.{key}_token_id")
        if found is not None:
            ids[f"{name}_token_id"] = int(found)
    return ids


# Llama 4 (llama.cpp's `llama4`, `src/models/llama4.cpp` load_arch_hparams). What the file does
# not say, llama.cpp fixes, and so does this reader: chunked attention over 8,192 tokens on
# every layer but each `attention.sliding_window_pattern`-th (4 unless the file says), NoPE on
# every 4th layer (`n_no_rope_layer_step`, no key) with attention temperature tuning (floor
# 8,192, scale 0.1, offset 1), the L2 qk-norm unless the model has 128 experts (Maverick,
# `use_kq_norm`). Released Llama 4 configs say the same (`attention_chunk_size` 8192,
# `floor_scale` 8192, `attn_scale` 0.1; Maverick's `use_qk_norm` false).
_LLAMA4_CHUNK = 8192
_LLAMA4_NOPE_STEP = 4
_LLAMA4_FLOOR_SCALE = 8192
_LLAMA4_ATTN_SCALE = 0.1
_LLAMA4_NO_QK_NORM_EXPERTS = 128
# convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors writes llama3 RoPE scaling as
# `rope_freqs` factors, taking the original context from the config's top level, where Llama 3
# and 4 configs do not keep it: 8,192 in every file it writes. The other bounds are recovered
# from the factors; first tried are the released models' (low_freq_factor, high_freq_factor):
# Llama 3.1-3.3 (1, 4) and Llama 4 Scout (1, 1).
LLAMA3_ORIGINAL_CONTEXT = 8192
_LLAMA3_BOUNDS = ((1.0, 4.0), (1.0, 1.0))
# DeepSeek (llama.cpp's `deepseek2`): `expert_gating_func` 2 is the sigmoid router
# (`gguf.ExpertGatingFuncType`); `rope.scaling.yarn_log_multiplier` is 0.1 * mscale_all_dim
# (DeepseekV2Model; llama.cpp divides the 0.1 back out, [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]).
_SIGMOID = 2
_YARN_LOG_MUL_UNIT = 0.1


def llama4_config(gguf: GgufFile) -> dict[str, Any]:
    """The Hugging Face `llama4_text` config of a llama.cpp `llama4` file (the keys
    `conversion/llama4.py` Llama4Model writes, the rest as llama.cpp's loader fixes them):
    MoE every `interleave_moe_layer_step`-th layer with a shared expert, llama3 RoPE from
    `rope_freqs`."""
    layers = int(gguf.arch("block_count"))
    experts = int(gguf.arch("expert_count", 0))
    if experts == 0:
        raise UnsupportedArchitecture(
            f"{gguf.path}: a llama4 file without experts (MobileLLM) is not supported "
            "(llama4.expert_count is 0; llama.cpp's llama4 loader refuses it too)"
        )
    if int(gguf.arch("attention.sliding_window", _LLAMA4_CHUNK)) == 0:
        raise UnsupportedArchitecture(
            f"{gguf.path}: llama4.attention.sliding_window = 0 (no chunked attention, "
            "llama.cpp's MobileLLM mode) is not supported"
        )
    pattern = gguf.arch("attention.sliding_window_pattern", 4)
    if isinstance(pattern, list):
        raise UnsupportedArchitecture(
            f"{gguf.path}: a per-layer llama4.attention.sliding_window_pattern is not supported"
        )
    period = int(pattern)
    config = _common_config(gguf, "llama4_text")
    theta = float(config.pop("rope_theta"))
    if float(gguf.arch("rope.freq_base_swa", theta)) != theta:
        raise UnsupportedArchitecture(
            f"{gguf.path}: a RoPE base of its own for the chunked layers "
            "(llama4.rope.freq_base_swa) is not supported"
        )
    head_dim = config["head_dim"]
    if int(gguf.arch("rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedArchitecture(
            f"{gguf.path}: llama4.rope.dimension_count differs from the head size {head_dim} "
            "(llama.cpp's llama4 graph rotates whole heads)"
        )
    step = int(gguf.arch("interleave_moe_layer_step"))
    config |= {
        "rms_norm_eps": _float_key(gguf, "attention.layer_norm_rms_epsilon", 1e-5),
        "intermediate_size": int(gguf.arch("expert_feed_forward_length")),
        "intermediate_size_mlp": int(gguf.arch("feed_forward_length")),
        "num_local_experts": experts,
        "num_experts_per_tok": int(gguf.arch("expert_used_count")),
        "moe_layers": [i for i in range(layers) if step > 0 and (i + 1) % step == 0],
        "no_rope_layers": [int((i + 1) % _LLAMA4_NOPE_STEP != 0) for i in range(layers)],
        "layer_types": [  # llama_hparams::set_swa_pattern
            "chunked_attention" if period == 0 or i % period < period - 1 else "full_attention"
            for i in range(layers)
        ],
        "attention_chunk_size": _LLAMA4_CHUNK,
        "attn_temperature_tuning": True,
        "floor_scale": _LLAMA4_FLOOR_SCALE,
        "attn_scale": _LLAMA4_ATTN_SCALE,
        "use_qk_norm": experts != _LLAMA4_NO_QK_NORM_EXPERTS,
        "rope_parameters": llama3_rope_parameters(gguf, theta, head_dim),
        **_special_tokens(gguf),
    }
    if step > 0:  # the family requires a positive step; `moe_layers` already says which
        config["interleave_moe_layer_step"] = step
    return config


def llama3_rope_factors(
    theta: float, head_dim: int, factor: float, low: float, high: float, original: float
) -> np.ndarray:
    """`rope_freqs` (head_dim / 2,) as `LlamaModel.generate_extra_tensors` computes it in
    float32: 1 for wavelengths under original / high, `factor` over original / low, blended
    between (transformers' `_compute_llama3_parameters` as a divisor of each frequency)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    wavelen = np.float32(2 * np.pi) * np.power(np.float32(theta), exponents)
    factors = np.ones_like(wavelen)
    factors[wavelen > original / low] = factor
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    if high > low:
        smooth = (original / wavelen[medium] - low) / (high - low)
        factors[medium] = 1 / ((1 - smooth) / factor + smooth)
    result: np.ndarray = factors.astype(np.float32)
    return result


def llama3_rope_parameters(gguf: GgufFile, theta: float, head_dim: int) -> dict[str, Any]:
    """`rope_parameters` from the file's `rope_freqs`: "default" without it (or all ones),
    "llama3" with the factor, bounds and original context that give back its factors; an
    error where no llama3 scaling does."""
    plain = {"rope_type": "default", "rope_theta": theta}
    found = gguf.config_tensor(ROPE_FREQS)
    if found is None or (found == 1.0).all():
        return plain
    factor = float(found.max())
    candidates = [*_LLAMA3_BOUNDS, *_fitted_bounds(found, theta, head_dim, factor)]
    for low, high in candidates:
        if len(found) == head_dim // 2 and np.allclose(
            llama3_rope_factors(theta, head_dim, factor, low, high, LLAMA3_ORIGINAL_CONTEXT),
            found,
            rtol=1e-5,
            atol=0.0,
        ):
            return plain | {
                "rope_type": "llama3",
                "factor": _float32(factor),
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": LLAMA3_ORIGINAL_CONTEXT,
            }
    raise UnsupportedArchitecture(
        f"{gguf.path}: rope_freqs ({len(found)} factors for head size {head_dim}: "
        f"{found[:8].tolist()} ...) is not llama3 RoPE scaling over "
        f"{LLAMA3_ORIGINAL_CONTEXT} original positions"
    )


def _fitted_bounds(
    found: np.ndarray, theta: float, head_dim: int, factor: float
) -> list[tuple[float, float]]:
    """(low_freq_factor, high_freq_factor) fitted to the blended factors, where there are
    two or more: each is 1 / ((1 - s) / factor + s) with s = (original / wavelen - low) /
    (high - low), a line in original / wavelen. The fit to 4 significant digits first
    (configs hold round bounds), then as found."""
    blended = (found > 1.0) & (found < factor)
    if blended.sum() < 2 or len(found) != head_dim // 2:
        return []
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    x = LLAMA3_ORIGINAL_CONTEXT / (2 * np.pi * theta**exponents[blended])
    s = (1 / found[blended].astype(np.float64) - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(x, s, 1)  # s = x / (high - low) - low / (high - low)
    low, high = float(-intercept / slope), float((1 - intercept) / slope)
    return [(float(f"{low:.4g}"), float(f"{high:.4g}")), (_shortest(low), _shortest(high))]


def deepseek2_config(gguf: GgufFile) -> dict[str, Any]:
    """The Hugging Face `deepseek_v3` config of a llama.cpp `deepseek2` file (the keys
    `conversion/deepseek.py` DeepseekV2Model and its base write; defaults as llama.cpp's
    loader takes them): MLA sizes, a sigmoid router with a selection bias, expert groups,
    renormalised and scaled weights, shared experts, dense leading layers, YaRN RoPE."""
    arch = gguf.architecture
    gating = int(gguf.arch("expert_gating_func", 0))
    if gating != _SIGMOID:
        raise UnsupportedArchitecture(
            f"{gguf.path}: {arch}.expert_gating_func = {gating} (1 or missing: DeepSeek-V2's "
            f"softmax router, as llama.cpp reads it): only DeepSeek-V3's sigmoid router "
            f"({_SIGMOID}) is supported"
        )
    if float(gguf.arch("attention.temperature_scale", 0.0)):
        raise UnsupportedArchitecture(
            f"{gguf.path}: attention temperature tuning ({arch}.attention.temperature_scale, "
            "Mistral Large 3) is not supported"
        )
    if int(gguf.arch("nextn_predict_layers", 0)):
        raise UnsupportedArchitecture(
            f"{gguf.path}: multi-token prediction layers ({arch}.nextn_predict_layers) are "
            "not supported"
        )
    experts = int(gguf.arch("expert_count", 0))
    if experts == 0:
        raise UnsupportedArchitecture(
            f"{gguf.path}: a {arch} file without routed experts ({arch}.expert_count) is not "
            "a DeepSeek-V3"
        )
    rope_dim = int(gguf.arch("rope.dimension_count"))
    # Newer files describe the absorbed MLA (key_length = kv_lora_rank + rope) and keep the
    # per-head sizes in `*_mla`; older ones have the per-head sizes as key/value_length.
    qk_dim = int(gguf.arch("attention.key_length_mla", gguf.arch("attention.key_length")))
    v_dim = int(gguf.arch("attention.value_length_mla", gguf.arch("attention.value_length")))
    q_lora = gguf.metadata.get(f"{arch}.attention.q_lora_rank")
    groups = int(gguf.arch("expert_group_count", 1)) or 1
    config = _base_config(gguf, "deepseek_v3")
    heads = config["num_attention_heads"]
    return config | {
        "num_key_value_heads": heads,  # MLA: llama.cpp writes 1 (its absorbed MQA view)
        "head_dim": rope_dim,  # as DeepseekV3Config sets it
        "rms_norm_eps": _float_key(gguf, "attention.layer_norm_rms_epsilon", 1e-6),
        "intermediate_size": int(gguf.arch("feed_forward_length")),
        "moe_intermediate_size": int(gguf.arch("expert_feed_forward_length")),
        "q_lora_rank": None if q_lora is None else int(q_lora),
        "kv_lora_rank": int(gguf.arch("attention.kv_lora_rank")),
        "qk_rope_head_dim": rope_dim,
        "qk_nope_head_dim": qk_dim - rope_dim,
        "v_head_dim": v_dim,
        "rope_interleave": True,  # ggml's NORM RoPE on the weights as released
        "n_routed_experts": experts,
        "num_experts_per_tok": int(gguf.arch("expert_used_count")),
        "n_shared_experts": int(gguf.arch("expert_shared_count")),
        "n_group": groups,
        "topk_group": int(gguf.arch("expert_group_used_count", groups)) or groups,
        "norm_topk_prob": bool(gguf.arch("expert_weights_norm", False)),
        "routed_scaling_factor": _float_key(gguf, "expert_weights_scale", 0.0) or 1.0,
        "first_k_dense_replace": int(gguf.arch("leading_dense_block_count", 0)),
        "rope_parameters": _deepseek2_rope(gguf),
        **_special_tokens(gguf),
    }


def _deepseek2_rope(gguf: GgufFile) -> dict[str, Any]:
    """`rope_parameters`: default, or YaRN as llama.cpp's deepseek2 graph runs it. Its cos
    and sin keep magnitude 1 and its softmax scale grows by (1 + 0.1 * mscale_all_dim * ln
    factor)^2, which is transformers' YaRN with mscale = mscale_all_dim (DeepSeek-R1's)."""
    arch = gguf.architecture
    theta = float(gguf.arch("rope.freq_base", 10_000.0))
    scaling = str(gguf.arch("rope.scaling.type", "none"))
    if scaling in ("none", ""):
        return {"rope_type": "default", "rope_theta": theta}
    if scaling != "yarn":
        raise UnsupportedArchitecture(
            f"{gguf.path}: {arch}.rope.scaling.type = {scaling!r} is not supported "
            "(supported: none, yarn)"
        )
    # llama.cpp: an extrapolation factor under 0 means YaRN's own, 1
    ext_factor = _float_key(gguf, "rope.scaling.yarn_ext_factor", -1.0)
    attn_factor = _float_key(gguf, "rope.scaling.yarn_attn_factor", 1.0)
    if attn_factor != 1.0 or ext_factor not in (-1.0, 1.0):
        raise UnsupportedArchitecture(
            f"{gguf.path}: {arch}.rope.scaling.yarn_attn_factor ({attn_factor}) or "
            f"yarn_ext_factor ({ext_factor}) other than 1 is not supported"
        )
    rope: dict[str, Any] = {
        "rope_type": "yarn",
        "rope_theta": theta,
        "factor": _float_key(gguf, "rope.scaling.factor", 1.0),
        "original_max_position_embeddings": int(
            gguf.arch("rope.scaling.original_context_length")
        ),
        "beta_fast": _float_key(gguf, "rope.scaling.yarn_beta_fast", 32.0),
        "beta_slow": _float_key(gguf, "rope.scaling.yarn_beta_slow", 1.0),
    }
    log_mul = float(gguf.arch("rope.scaling.yarn_log_multiplier", 0.0))
    if not log_mul:  # no softmax rescaling, and cos and sin unscaled
        return rope | {"attention_factor": 1.0}
    mscale = _shortest(np.float32(log_mul) / np.float32(_YARN_LOG_MUL_UNIT))
    return rope | {"mscale": mscale, "mscale_all_dim": mscale}
