"""Checkpoints written as GGUF files that llama.cpp loads: Gemma 4 (llama.cpp's `gemma4`).

What goes into the file follows llama.cpp's own converter (`conversion/gemma.py`,
Gemma4Model and its bases) and what its loader requires (`src/models/gemma4.cpp`):
- names: the table `export.gguf_file` reads them back with (`gguf_name` <- `hf_key`);
- 2-D and 3-D weights (attention, MLP, experts, embeddings) at the chosen type (Q4_0,
  Q8_0, F16 or F32); a matrix whose rows are not whole blocks of 32 falls back to F16, as
  the converter's does. 1-D weights (norms, the router's and the experts' scales, the
  layer scalar) and the router matrix stay F32 (`prepare_tensors`: `FFN_GATE_INP` and
  every vector are F32 whatever the file type);
- `rope_freqs.weight` (head_dim / 2,): the full layers' proportional RoPE as ggml does it,
  rotating every dimension pair but at frequency factor 1e30 (standing still) past the
  `partial_rotary_factor` share (`generate_extra_tensors`);
- metadata: `gemma4.*` sizes, per-layer KV heads, the sliding-window pattern, both head
  sizes and RoPE bases, and a tokenizer (`GgufVocab`; a synthetic one for random weights,
  where only token ids are ever fed).

Tensors stream: the tensor infos (name, shape, type, bytes) are all known from the config,
so the header is written first and each tensor is then read from `weights`, encoded and
written before the next is read; memory stays near the largest single tensor.

Q4_0 and Q8_0 are quantised here in numpy, chunk by chunk, to the bytes of ggml's reference
quantiser (`quantize_row_q4_0_ref`: scale = the block's largest-magnitude value / -8, codes
trunc(x / scale + 8.5) capped at 15; `quantize_row_q8_0_ref`: scale = max |x| / 127, codes
round-half-away(x / scale)). Measured on one core of the development machine (2026-12-05,
two layers of Gemma 4 26B-A4B's geometry, 6.9 GB of float32 in): Q4_0 0.58 GB/s, Q8_0
0.40 GB/s, so the whole model (25.2 G parameters) in about 3 and 4.5 minutes plus reading
its weights. A weight that is born quantised (`export.quantize.SeededBlocks`) gives its
drawn codes and scales as they are, so the GGUF file and an int4/int8 ONNX export of it
hold the same blocks (scales rounded to float16 here).

The file is written as `NAME.partial` and renamed when complete.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.checkpoint import checkpoint_shapes
from export.errors import ConfigKeyError, ExportError, UnsupportedArchitecture
from export.families import spec_from_config
from export.gguf_config import ROPE_FREQS
from export.gguf_file import TENSOR_NAMES, gguf_name
from export.onnx_ops import Progress, Weights
from export.quantize import Quantized, SeededBlocks, quantize_unpacked
from export.spec import AttentionSpec, ModelSpec

log = logging.getLogger(__name__)

ARCHITECTURE = "gemma4"
BLOCK = 32  # values per Q4_0 / Q8_0 block, one float16 scale each
# Bytes per block: the float16 scale, then the codes (Q4_0: two per byte).
_BLOCK_BYTES = {"Q4_0": 2 + BLOCK // 2, "Q8_0": 2 + BLOCK}
_BITS = {"Q4_0": 4, "Q8_0": 8}
QTYPES = ("Q4_0", "Q8_0", "F16", "F32")
# llama.cpp's `llama_ftype` of a file whose matrices are all of one type
# (`gguf.LlamaFileType`: ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0).
_FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7}
_CHUNK_BLOCKS = 1 << 16  # blocks quantised at a time: 8 MB of float32, fast and bounded
# `rope_freqs` factor of a frequency that stands still (Gemma4Model.generate_extra_tensors).
_STILL = 1e30
# ggml token types (`gguf.TokenType`).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


@dataclass(frozen=True)
class GgufVocab:
    """A tokenizer as GGUF metadata (`tokenizer.ggml.*`), one entry per token id."""

    model: str
    """`tokenizer.ggml.model`: "gemma4" (BPE with merges, as Gemma 4 files have), "llama"
    (sentencepiece), ..."""
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...] = ()
    """BPE merges, "left right", best first."""
    scores: tuple[float, ...] | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = True


def synthetic_vocab(size: int) -> GgufVocab:
    """A Gemma 4 shaped vocabulary of `size` tokens for random weights: <pad> <eos> <bos>
    <unk> <mask> at Gemma's ids 0-4, the 256 byte tokens, "▁", "\\n" and the letters, "▁a"
    to "▁z" with their merges, then filler pieces. llama.cpp and transformers both build a
    tokenizer from it (transformers' GemmaTokenizer adds a <mask> when there is none); the
    model only ever sees ids."""
    specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
    byte_tokens = tuple(f"<0x{b:02X}>" for b in range(256))
    if size < len(specials) + len(byte_tokens):
        raise ConfigKeyError(
            f"config key 'vocab_size' ({size}) is too small for a synthetic GGUF vocabulary "
            f"(at least {len(specials) + len(byte_tokens)}: 5 specials and 256 bytes)"
        )
    letters = tuple("abcdefghijklmnopqrstuvwxyz")
    pieces = ("▁", "\n", *letters, *(f"▁{c}" for c in letters))
    fillers = (f"▁piece{i}" for i in range(size))
    tokens = (*specials, *byte_tokens, *pieces, *fillers)[:size]
    types = (CONTROL, CONTROL, CONTROL, UNKNOWN, CONTROL, *[BYTE] * 256)
    types += (NORMAL,) * (size - len(types))
    present = set(tokens)
    merges = tuple(f"▁ {c}" for c in letters if f"▁{c}" in present and c in present)
    return GgufVocab(
        model="gemma4",
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=2,
        eos_id=1,
        unk_id=3,
        pad_id=0,
    )


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the file: its GGUF name and type, the checkpoint key it comes from
    (None: made here), its shape (numpy order, outermost first) and size in bytes."""

    name: str
    key: str | None
    shape: tuple[int, ...]
    qtype: str
    nbytes: int


def tensor_bytes(shape: tuple[int, ...], qtype: str) -> int:
    """Bytes of a tensor of `shape` stored as `qtype`."""
    count = int(np.prod(shape))
    if qtype in _BLOCK_BYTES:
        return count // BLOCK * _BLOCK_BYTES[qtype]
    return count * (2 if qtype == "F16" else 4)


def storage_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    """The type a tensor is stored as: vectors and the router F32, matrices at `qtype`
    (F16 when a row is not whole blocks of 32)."""
    if len(shape) == 1 or ".ffn_gate_inp." in name:
        return "F32"
    if qtype in _BLOCK_BYTES and shape[-1] % BLOCK:
        return "F16"
    return qtype


def plan_tensors(spec: ModelSpec, qtype: str) -> list[PlannedTensor]:
    """Every tensor of the GGUF file of `spec`, in file order: the embeddings, `rope_freqs`,
    then layer by layer as the checkpoint lists them, the final norm, an untied head."""
    names = TENSOR_NAMES[ARCHITECTURE]
    planned = []
    for key, shape in checkpoint_shapes(spec).items():
        name = gguf_name(key, names)
        stored = storage_type(name, shape, qtype)
        planned.append(PlannedTensor(name, key, shape, stored, tensor_bytes(shape, stored)))
        if key == "model.embed_tokens.weight":
            half = (_full_attention(spec).head_dim // 2,)
            planned.append(PlannedTensor(ROPE_FREQS, None, half, "F32", tensor_bytes(half, "F32")))
    return planned


def _full_attention(spec: ModelSpec) -> AttentionSpec:
    """The geometry every full-attention layer shares (llama.cpp has one per kind)."""
    return _one_attention(spec, "full")


def _one_attention(spec: ModelSpec, kind: str) -> AttentionSpec:
    found = {layer.attention for layer in spec.layers if layer.attention.kind == kind}
    if len(found) > 1:
        raise UnsupportedArchitecture(
            f"{kind}-attention layers of different geometry cannot be written as GGUF "
            "(llama.cpp's gemma4 has one head size per attention kind)"
        )
    if not found:  # no layer of this kind: llama.cpp still reads its sizes
        return next(layer.attention for layer in spec.layers)
    return found.pop()


def rope_factors(attention: AttentionSpec) -> np.ndarray:
    """`rope_freqs.weight` (head_dim / 2,) for the full layers: 1 for each frequency that
    rotates, 1e30 for each that stands still (Gemma4Model.generate_extra_tensors)."""
    rope, half = attention.rope, attention.head_dim // 2
    if rope.rope_type == "proportional":
        rotating = int(attention.head_dim * rope.partial_rotary_factor / 2)
    elif rope.rope_type == "default" and rope.partial_rotary_factor == 1.0:
        rotating = half
    else:
        raise UnsupportedArchitecture(
            f"full-attention RoPE {rope.rope_type!r} with partial_rotary_factor "
            f"{rope.partial_rotary_factor} has no llama.cpp gemma4 form"
        )
    return np.array([1.0] * rotating + [_STILL] * (half - rotating), np.float32)


def write_metadata(
    writer: Any, spec: ModelSpec, vocab: GgufVocab, qtype: str, name: str, licence: str | None
) -> None:
    """The `general.*`, `gemma4.*` and `tokenizer.ggml.*` keys llama.cpp's gemma4 loader
    reads (`llama_model_gemma4::load_arch_hparams` and the shared `load_hparams`)."""
    full, sliding = _full_attention(spec), _one_attention(spec, "sliding")
    activations = {layer.mlp.activation for layer in spec.layers if layer.mlp is not None}
    if activations - {"gelu_pytorch_tanh"}:
        raise UnsupportedArchitecture(
            f"hidden_activation {sorted(activations)} in a GGUF file: llama.cpp's gemma4 "
            "computes GELU (tanh approximation) only"
        )
    if sliding.rope.rope_type != "default" or sliding.rope.partial_rotary_factor != 1.0:
        raise UnsupportedArchitecture(
            "sliding-attention RoPE other than the default over the whole head has no "
            "llama.cpp gemma4 form"
        )
    writer.add_name(name)
    if licence:
        writer.add_license(licence)
    writer.add_file_type(_FILE_TYPE[qtype])
    writer.add_quantization_version(2)  # GGML_QNT_VERSION
    writer.add_context_length(spec.max_position_embeddings)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(len(spec.layers))
    mlps = {layer.mlp.intermediate_size for layer in spec.layers if layer.mlp is not None}
    if len(mlps) != 1:
        raise UnsupportedArchitecture(f"dense MLP sizes {sorted(mlps)}: llama.cpp needs one")
    writer.add_feed_forward_length(mlps.pop())
    writer.add_head_count(full.n_heads)
    writer.add_head_count_kv([layer.attention.n_kv_heads for layer in spec.layers])
    writer.add_layer_norm_rms_eps(spec.rms_norm_eps)
    writer.add_key_length(full.head_dim)
    writer.add_value_length(full.head_dim)
    writer.add_key_length_swa(sliding.head_dim)
    writer.add_value_length_swa(sliding.head_dim)
    # The full layers rotate every pair (ggml's NEOX pairs i and i + head_dim / 2, as
    # transformers' rotate_half) at the factors of `rope_freqs`.
    writer.add_rope_dimension_count(full.head_dim)
    writer.add_rope_dimension_count_swa(sliding.head_dim)
    writer.add_rope_freq_base(full.rope.theta)
    writer.add_rope_freq_base_swa(sliding.rope.theta)
    writer.add_sliding_window(sliding.window or spec.max_position_embeddings)
    writer.add_sliding_window_pattern([layer.attention.kind == "sliding" for layer in spec.layers])
    writer.add_shared_kv_layers(0)
    writer.add_embedding_length_per_layer_input(0)
    if spec.final_logit_softcapping:
        writer.add_final_logit_softcapping(spec.final_logit_softcapping)
    moes = {layer.moe for layer in spec.layers}
    if len(moes) != 1:
        raise UnsupportedArchitecture("a MoE on some layers only cannot be written as GGUF")
    moe = moes.pop()
    if moe is not None:
        writer.add_expert_count(moe.num_experts)
        writer.add_expert_used_count(moe.top_k)
        writer.add_expert_feed_forward_length(moe.expert_intermediate_size)
    write_vocab(writer, vocab)


def write_vocab(writer: Any, vocab: GgufVocab) -> None:
    """`tokenizer.ggml.*` as llama.cpp's vocabulary loader reads them."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    if vocab.scores is not None:
        writer.add_token_scores(list(vocab.scores))
    if vocab.merges:
        writer.add_token_merges(list(vocab.merges))
    for add, token_id in (
        (writer.add_bos_token_id, vocab.bos_id),
        (writer.add_eos_token_id, vocab.eos_id),
        (writer.add_unk_token_id, vocab.unk_id),
        (writer.add_pad_token_id, vocab.pad_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_space_prefix(False)


def write_gguf(
    config: Mapping[str, Any],
    weights: Weights,
    path: Path,
    qtype: str = "Q4_0",
    progress: Progress | None = None,
    *,
    tokenizer: GgufVocab | None = None,
    name: str | None = None,
    licence: str | None = None,
) -> None:
    """Write the Gemma 4 model of `config` with tensors from `weights` (transformers keys)
    as a GGUF file llama.cpp runs: matrices at `qtype` (Q4_0, Q8_0, F16, F32), one tensor
    in memory at a time. Without `tokenizer`, a synthetic vocabulary of vocab_size tokens
    (`synthetic_vocab`). `progress` is called after each tensor."""
    import gguf

    if qtype not in QTYPES:
        raise ConfigKeyError(f"GGUF type {qtype!r} is not supported; supported: {QTYPES}")
    spec = spec_from_config(config)
    if spec.model_type != "gemma4_text":
        raise UnsupportedArchitecture(
            f"model_type {spec.model_type!r} cannot be written as GGUF yet (supported: "
            "gemma4_text)"
        )
    vocab = tokenizer or synthetic_vocab(spec.vocab_size)
    if len(vocab.tokens) != spec.vocab_size or len(vocab.token_types) != spec.vocab_size:
        raise ConfigKeyError(
            f"the tokenizer has {len(vocab.tokens)} tokens ({len(vocab.token_types)} types) "
            f"for vocab_size {spec.vocab_size}: llama.cpp needs one per embedding row"
        )
    planned = plan_tensors(spec, qtype)
    factors = rope_factors(_full_attention(spec))
    partial = path.with_name(f"{path.name}.partial")
    writer = gguf.GGUFWriter(str(partial), ARCHITECTURE)
    write_metadata(writer, spec, vocab, qtype, name or spec.model_type, licence)
    for t in planned:
        writer.add_tensor_info(
            t.name, t.shape, np.dtype(np.float32), t.nbytes, gguf.GGMLQuantizationType[t.qtype]
        )
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, t in enumerate(planned, 1):
            value = factors if t.key is None else _checked(t.key, weights(t.key), t.shape)
            data = encode(value, t.qtype)
            if data.nbytes != t.nbytes:  # the header already promised this size
                raise ExportError(f"{t.name}: encoded {data.nbytes} bytes, planned {t.nbytes}")
            writer.write_tensor_data(data)
            if progress is not None:
                progress(t.key or t.name, done, len(planned))
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    log.info("wrote %s: %d tensors, %s", path, len(planned), qtype)


def _checked(key: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`value` (kept a SeededBlocks if it is one), its shape checked against the config's."""
    value = np.asanyarray(value)
    if value.shape != shape:
        raise ExportError(
            f"checkpoint tensor {key!r} has shape {value.shape}, the config implies {shape}"
        )
    return value


def encode(value: np.ndarray, qtype: str) -> np.ndarray:
    """The bytes of `value` stored as `qtype` (F32, F16, Q4_0, Q8_0 along the last axis)."""
    if isinstance(value, SeededBlocks) and qtype not in _BITS:
        raise ExportError(
            f"a weight drawn as quantised blocks (SeededBlocks) cannot be stored as {qtype}: "
            "write the file as Q4_0 or Q8_0"
        )
    if qtype == "F32":
        return np.ascontiguousarray(value, np.float32)
    if qtype == "F16":
        return np.ascontiguousarray(value, np.float16)
    bits = _BITS[qtype]
    if isinstance(value, SeededBlocks):
        return pack_blocks(quantize_unpacked(value, bits, BLOCK))
    blocks = np.ascontiguousarray(value, np.float32).reshape(-1, BLOCK)
    out = np.empty((blocks.shape[0], _BLOCK_BYTES[qtype]), np.uint8)
    rule = _q4_0 if bits == 4 else _q8_0
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        chunk = blocks[start : start + _CHUNK_BLOCKS]
        codes, scales = rule(chunk)
        _pack(codes, scales, bits, out[start : start + _CHUNK_BLOCKS])
    return out


def pack_blocks(q: Quantized) -> np.ndarray:
    """ggml blocks (Q4_0 or Q8_0) of `export.quantize` codes (..., K), one scale per 32."""
    if q.block != BLOCK:
        raise ExportError(f"ggml blocks hold {BLOCK} values, not {q.block}")
    codes = q.codes.reshape(-1, BLOCK)
    if q.bits == 8:  # value (code - 128) * scale: the code's top bit flipped is the int8
        codes = (codes ^ np.uint8(0x80)).view(np.int8)
    out = np.empty((codes.shape[0], _BLOCK_BYTES["Q4_0" if q.bits == 4 else "Q8_0"]), np.uint8)
    _pack(codes, q.scales.reshape(-1), q.bits, out)
    return out


def _pack(codes: np.ndarray, scales: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Write blocks into `out` (n, bytes): the float16 scale, then the codes (n, 32). Q4_0:
    unsigned codes 0..15 for value (code - 8) * scale, value j in the low nibble of byte j
    and value j + 16 in its high nibble. Q8_0: int8 codes for value code * scale."""
    out[:, :2] = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
    if bits == 4:
        out[:, 2:] = codes[:, : BLOCK // 2] | (codes[:, BLOCK // 2 :] << 4)
    else:
        out[:, 2:] = codes.view(np.uint8)


def _q4_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's `quantize_row_q4_0_ref` on float32 blocks (n, 32): codes (n, 32) and scales."""
    peak = blocks[np.arange(blocks.shape[0]), np.abs(blocks).argmax(1)]
    scale = peak / np.float32(-8)
    with np.errstate(divide="ignore"):
        inverse = np.where(scale == 0, np.float32(0), np.float32(1) / scale)
    x = blocks * inverse[:, None]
    x += np.float32(8.5)  # >= 0.5 here, so the cast truncates as C's (int8_t) does
    codes = x.astype(np.uint8)
    np.minimum(codes, 15, out=codes)
    return codes, scale


def _q8_0(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's `quantize_row_q8_0_ref`: scale max |x| / 127, int8 codes roundf(x / scale),
    C's roundf taking halves away from zero where numpy's rint takes them to even."""
    # argmax then take: twice as fast as a max over rows of 32
    scale = np.abs(blocks[np.arange(blocks.shape[0]), np.abs(blocks).argmax(1)])
    scale /= np.float32(127)
    with np.errstate(divide="ignore"):
        inverse = np.where(scale == 0, np.float32(0), np.float32(1) / scale)
    x = blocks * inverse[:, None]
    rounded = np.rint(x)
    off = (x - rounded).reshape(-1)  # exact; +-0.5 only at a tie
    tie = np.flatnonzero(np.abs(off) == np.float32(0.5))
    tie = tie[off[tie] * x.reshape(-1)[tie] > 0]  # the ties rint took toward zero
    rounded.reshape(-1)[tie] += 2 * off[tie]
    return rounded.astype(np.int8), scale
