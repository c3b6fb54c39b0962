"""The model directory contract: what `export/` writes and the runtime reads.

One module for both sides, so a name cannot drift between the writer and the reader.
A model directory holds `MODEL_FILE` (the ONNX graph, with its weights as external
data beside it), `MANIFEST_FILE` (sizes, sha256, the graph's inputs and outputs, the KV
layout; `subtitled.translate.manifest`) and `TOKENIZER_FILE`.

The graph takes `INPUT_IDS` and `POSITION_IDS` (batch, sequence), `LOGITS_ROWS` (how
many of the fed positions, from the last, get logits), `CACHE_LENGTHS` where layers
share length slots, and one `past_name(layer, tensor)` per cached tensor; it returns
`LOGITS` and one `present_name(layer, tensor)` per cached tensor.
"""

from __future__ import annotations

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
LOGITS = "logits"
CACHE_LENGTHS = "cache_lengths"
"""Graph input (slots,) int64: tokens held per length slot (layers that share a slot
hold the same number of tokens)."""
LOGITS_ROWS = "logits_rows"
"""Graph input (1,) int64 of exports since 2026-12-05: how many of the fed positions, from
the last, get logits. Prefill needs one row (or a draft's), and the LM head over a 262k
vocabulary is the largest matmul of a step; older graphs compute every row."""
PAST = "past_key_values."
PRESENT = "present."

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def past_name(layer: int, tensor: str) -> str:
    """The graph input holding layer `layer`'s cached `tensor` ("key" or "value")."""
    return f"{PAST}{layer}.{tensor}"


def present_name(layer: int, tensor: str) -> str:
    """The graph output holding layer `layer`'s `tensor` after this step."""
    return f"{PRESENT}{layer}.{tensor}"
