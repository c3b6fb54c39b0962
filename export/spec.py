"""The architecture of a decoder-only causal LM as data, read once from its Hugging Face config.

Every later stage (the size plan, the ONNX builder, verification) reads a `ModelSpec`
instead of the raw config, so differences between families (Gemma 4's mix of sliding and
full layers with their own head sizes, K=V, a MoE beside a dense MLP; Mixtral's pure MoE)
are fields here, not branches there. Family readers live in `export.families`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from export.errors import ConfigKeyError

AttentionKind = Literal["sliding", "full"]
# Norm on q and k per head: RMSNorm with a weight (Qwen3, Gemma 3/4, applied before RoPE),
# or a weightless L2 norm after RoPE (Llama 4 `use_qk_norm`).
QkNorm = Literal["rms", "l2"]


@dataclass(frozen=True)
class RopeSpec:
    """Rotary position embedding of one attention layer.

    `partial_rotary_factor` is the share of `head_dim` that rotates; with `rope_type`
    "proportional" (Gemma 4 full layers) the frequencies are still spaced over the whole
    head_dim and the non-rotating tail gets frequency 0 (transformers
    `_compute_proportional_rope_parameters`).
    """

    theta: float
    rope_type: str
    partial_rotary_factor: float = 1.0
    # Rotate adjacent pairs (x0, x1) (Llama 4's complex multiplication) instead of halves.
    interleaved: bool = False
    # rope_type "llama3": factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings (transformers `_compute_llama3_parameters`).
    llama3: tuple[float, float, float, float] | None = None
    # rope_type "yarn" (transformers `_compute_yarn_parameters`): factor, beta_fast,
    # beta_slow, original_max_position_embeddings, truncate.
    yarn: tuple[float, float, float, float, bool] | None = None
    # cos and sin are multiplied by this (YaRN's attention factor; 1 otherwise).
    attention_factor: float = 1.0
    # rope_type "linear": the inverse frequencies divided by this, i.e. positions slowed
    # by it (transformers `_compute_linear_scaling_rope_parameters`; Gemma 3 4B-27B full
    # layers use 8).
    linear_factor: float = 1.0


@dataclass(frozen=True)
class TemperatureSpec:
    """Llama 4 attention temperature tuning on NoPE layers (`attn_temperature_tuning`):
    q *= log(floor((position + 1) / floor_scale) + 1) * scale + 1."""

    floor_scale: float
    scale: float


@dataclass(frozen=True)
class MlaSpec:
    """DeepSeek multi-head latent attention (`DeepseekV3Attention`): q through an optional
    low-rank pair (`q_a_proj`, `q_a_layernorm`, `q_b_proj`), K/V expanded by `kv_b_proj`
    from a shared latent of `kv_lora_rank` (`kv_a_proj_with_mqa`, `kv_a_layernorm`) plus one
    shared RoPE key of `rope_dim`. The cache keeps the latent and the roped key, one tensor
    (B, 1, T, kv_lora_rank + rope_dim), and expands K/V from it each step."""

    q_lora_rank: int | None
    kv_lora_rank: int
    nope_dim: int
    rope_dim: int
    v_head_dim: int
    # `q_a_layernorm` and `kv_a_layernorm` are built without an eps: DeepseekV3RMSNorm's 1e-6.
    norm_eps: float = 1e-6

    @property
    def qk_head_dim(self) -> int:
        return self.nope_dim + self.rope_dim


@dataclass(frozen=True)
class AttentionSpec:
    """Geometry of one self-attention layer (checkpoint prefix `self_attn`)."""

    kind: AttentionKind
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: RopeSpec
    # Tokens a sliding layer attends to (and so keeps in its KV cache); None for full layers.
    window: int | None
    # Gemma 4 full layers (`attention_k_eq_v`): no v_proj, V is the k_proj output normed by a
    # scale-free RMSNorm, so K = RoPE(V * k_norm.weight) and the cache needs only V.
    k_eq_v: bool
    # Per-head norm on q and k, see `QkNorm`; None for none.
    qk_norm: QkNorm | None
    # Per-head RMSNorm without scale on v (Gemma 4 `v_norm`).
    v_norm: bool
    # Softmax scale on q·k; Gemma 4 uses 1.0 (its qk norms do the scaling).
    scale: float
    # No positional rotation on this layer (Llama 4 NoPE layers); `rope` is then unused.
    nope: bool = False
    # Llama 4 chunked attention: keys only from the query's chunk of this many positions.
    chunk: int | None = None
    temperature: TemperatureSpec | None = None
    # DeepSeek MLA; `n_kv_heads` and `head_dim` then describe its one cache tensor.
    mla: MlaSpec | None = None

    @property
    def q_size(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def rotary_dim(self) -> int:
        """Dims RoPE tables are built for: MLA's shared rope key, else the head."""
        return self.mla.rope_dim if self.mla is not None else self.head_dim

    @property
    def kv_size(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def cache_tensors(self) -> tuple[str, ...]:
        """Names of the cached tensors: only "value" when K is recomputed from V (K=V) or
        both come from MLA's latent."""
        return ("value",) if self.k_eq_v or self.mla is not None else ("key", "value")

    def projections(self, hidden: int) -> dict[str, tuple[int, int]]:
        """Checkpoint name (under `self_attn`) -> (out, in) of every projection matrix."""
        if self.mla is not None:
            m, heads = self.mla, self.n_heads
            shapes: dict[str, tuple[int, int]] = {}
            if m.q_lora_rank is None:
                shapes["q_proj"] = (heads * m.qk_head_dim, hidden)
            else:
                shapes["q_a_proj"] = (m.q_lora_rank, hidden)
                shapes["q_b_proj"] = (heads * m.qk_head_dim, m.q_lora_rank)
            shapes["kv_a_proj_with_mqa"] = (m.kv_lora_rank + m.rope_dim, hidden)
            shapes["kv_b_proj"] = (heads * (m.nope_dim + m.v_head_dim), m.kv_lora_rank)
            shapes["o_proj"] = (hidden, heads * m.v_head_dim)
            return shapes
        shapes = {"q_proj": (self.q_size, hidden), "k_proj": (self.kv_size, hidden)}
        if not self.k_eq_v:
            shapes["v_proj"] = (self.kv_size, hidden)
        shapes["o_proj"] = (hidden, self.q_size)
        return shapes

    @property
    def kv_tensors(self) -> int:
        """Cache tensors per layer: 1 when K is recomputed from V (K=V), else 2."""
        return len(self.cache_tensors)

    def cached(self, shared: bool) -> tuple[str, ...]:
        """The tensors an export caches: with shared buffers (`--kv-cache shared`) a K=V
        layer keeps K beside V in `GroupQueryAttention`'s buffers, so a step computes K
        for its own tokens only instead of rebuilding it over the whole cache (twice the
        memory of those layers, a constant cost per step); otherwise `cache_tensors`."""
        if shared and self.k_eq_v and self.mla is None and self.chunk is None:
            return ("key", "value")
        return self.cache_tensors


@dataclass(frozen=True)
class MlpSpec:
    """A gated (GLU) MLP: down(act(gate(x)) * up(x)), at checkpoint prefix `key` (relative
    to the layer)."""

    intermediate_size: int
    activation: str
    key: str = "mlp"


@dataclass(frozen=True)
class MoeSpec:
    """A sparse Mixture-of-Experts block of gated experts, stored as 3-D tensors
    `experts.gate_up_proj` (E, 2*I, H) and `experts.down_proj` (E, H, I)."""

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    activation: str
    # Router: softmax over experts, top-k, then renormalise the k weights to sum to 1?
    normalize_top_k: bool
    # Checkpoint key of the router matrix (E, H), relative to the layer.
    router_key: str
    # Checkpoint prefix of `gate_up_proj` and `down_proj`, relative to the layer.
    experts_key: str
    # Router scores: softmax over experts, or an independent sigmoid per expert (Llama 4,
    # DeepSeek-V3).
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    # Llama 4 multiplies each expert's input by its score instead of its output.
    weights_on_input: bool = False
    # Llama 4 stores the tables as (E, in, out): (E, H, 2I) and (E, I, H).
    experts_in_out: bool = False
    # Always-on shared expert(s) added to the routed ones (Llama 4, DeepSeek-V3).
    shared: MlpSpec | None = None
    # DeepSeek-V3 `noaux_tc` routing: experts chosen by score + this bias (E,), within the
    # best `top_groups` of `groups` expert groups; weights scaled by `scaling`.
    correction_bias_key: str | None = None
    groups: int = 1
    top_groups: int = 1
    scaling: float = 1.0


@dataclass(frozen=True)
class VectorSpec:
    """A 1-D weight (a norm scale, a router scale, a layer scalar), by checkpoint key."""

    key: str
    width: int


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer. `mlp` and `moe` may both be present (Gemma 4 runs them side by side)."""

    index: int
    attention: AttentionSpec
    mlp: MlpSpec | None
    moe: MoeSpec | None
    vectors: tuple[VectorSpec, ...]


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only causal LM: embeddings, layers, final norm, (tied) LM head."""

    model_type: str
    vocab_size: int
    hidden_size: int
    layers: tuple[LayerSpec, ...]
    tie_word_embeddings: bool
    # logits = cap * tanh(logits / cap) when set (Gemma `final_logit_softcapping`).
    final_logit_softcapping: float | None
    rms_norm_eps: float
    max_position_embeddings: int
    # Embedding rows are multiplied by this (Gemma: sqrt(hidden_size)).
    embed_scale: float
    # Model-level 1-D weights (the final norm), by checkpoint key.
    vectors: tuple[VectorSpec, ...]
    # Every RMSNorm with a weight scales by (norm_offset + weight): 1 for Gemma 3
    # (`Gemma3RMSNorm`, weights stored around 0), 0 elsewhere (Gemma 4's `Gemma4RMSNorm`
    # and the Llama-style norms multiply by the weight as stored).
    norm_offset: float = 0.0

    @property
    def num_layers(self) -> int:
        return len(self.layers)


class ConfigReader:
    """Typed access to a config dict; every error names the key (with its path) and the
    expected type, so a bad config.json fails once, at load, with a message to act on."""

    def __init__(self, config: Mapping[str, Any], path: str = "") -> None:
        self._config = config
        self._path = path

    def has(self, key: str) -> bool:
        return self._config.get(key) is not None

    def names(self) -> list[str]:
        """The keys present."""
        return [str(key) for key in self._config]

    def raw(self, key: str) -> object:
        """The value as stored, None when absent."""
        return self._config.get(key)

    def _name(self, key: str) -> str:
        return f"{self._path}{key}"

    def _raw(self, key: str, default: object) -> object:
        value = self._config.get(key)
        if value is None:
            if default is _REQUIRED:
                raise ConfigKeyError(f"config key {self._name(key)!r} is missing")
            return default
        return value

    def get_int(self, key: str, default: int | object = None) -> int:
        value = self._raw(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigKeyError(
                f"config key {self._name(key)!r} must be an integer, got {value!r}"
            )
        if value < 0:
            raise ConfigKeyError(f"config key {self._name(key)!r} must be >= 0, got {value}")
        return value

    def get_positive_int(self, key: str, default: int | object = None) -> int:
        value = self.get_int(key, default)
        if value == 0:
            raise ConfigKeyError(f"config key {self._name(key)!r} must be > 0, got 0")
        return value

    def get_optional_int(self, key: str) -> int | None:
        return self.get_int(key) if self.has(key) else None

    def get_float(self, key: str, default: float | object = None) -> float:
        value = self._raw(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigKeyError(f"config key {self._name(key)!r} must be a number, got {value!r}")
        return float(value)

    def get_optional_float(self, key: str) -> float | None:
        return self.get_float(key) if self.has(key) else None

    def get_bool(self, key: str, default: bool | object = None) -> bool:
        value = self._raw(key, _REQUIRED if default is None else default)
        if not isinstance(value, bool):
            raise ConfigKeyError(
                f"config key {self._name(key)!r} must be true or false, got {value!r}"
            )
        return value

    def get_str(self, key: str, default: str | object = None) -> str:
        value = self._raw(key, _REQUIRED if default is None else default)
        if not isinstance(value, str):
            raise ConfigKeyError(f"config key {self._name(key)!r} must be a string, got {value!r}")
        return value

    def get_str_list(self, key: str) -> list[str]:
        value = self._raw(key, _REQUIRED)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigKeyError(f"config key {self._name(key)!r} must be a list of strings")
        return list(value)

    def get_int_list(self, key: str, default: list[int] | object = None) -> list[int]:
        value = self._raw(key, _REQUIRED if default is None else default)
        if not isinstance(value, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        ):
            raise ConfigKeyError(f"config key {self._name(key)!r} must be a list of integers")
        return list(value)

    def section(self, key: str) -> ConfigReader:
        value = self._raw(key, _REQUIRED)
        if not isinstance(value, Mapping):
            raise ConfigKeyError(f"config key {self._name(key)!r} must be an object")
        return ConfigReader(value, f"{self._name(key)}.")

    def get_one_of(self, key: str, allowed: tuple[str, ...], default: str | object = None) -> str:
        value = self.get_str(key, default)
        if value not in allowed:
            raise ConfigKeyError(
                f"config key {self._name(key)!r} is {value!r}; allowed: {', '.join(allowed)}"
            )
        return value


_REQUIRED = object()
