"""`python -m export reexport SRC --out DIR`: an exported model directory exported again.

Its weights come back through `export.restore` (int8/int4 as the values they stand for)
into a Hugging Face checkpoint of its own `config.json`, with its tokenizer, prompt
template, name, licence and documents (MODEL_CARD, ATTRIBUTION, LICENSE, README); that
checkpoint is then exported like any other. This is how a shipped model whose training
checkpoint is gone moves to a newer graph (another experts' kernel, the current
exporter's fusions) or another precision. Re-quantising at the precision it was stored
in gives back the same codes and scales (a block's largest value still maps to the
lowest code), so only the graph changes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from export.checkpoint import load_config
from export.errors import ExportError
from export.model_dir import DOC_PATTERNS, SIDECAR, export_checkpoint
from export.onnx_ops import Progress
from export.plan import Precision
from subtitled.translate.manifest import Manifest, load_manifest

_KEPT = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def restored_checkpoint(source: Path, checkpoint: Path) -> Manifest:
    """Write `source`'s weights, config, tokenizer, `subtitled.json` and documents as a
    Hugging Face checkpoint directory `checkpoint`; returns `source`'s manifest."""
    import torch

    from export.families import spec_from_config
    from export.reference import random_model
    from export.restore import restore

    manifest = load_manifest(source)
    config = load_config(source / "config.json")
    model = random_model(config)
    layers = spec_from_config(config).layers
    in_out = any(layer.moe is not None and layer.moe.experts_in_out for layer in layers)
    state = model.state_dict()
    restored = restore(source, {k: tuple(v.shape) for k, v in state.items()}, in_out)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(state) - set(restored) - tied)
    if missing:
        raise ExportError(f"{source} has no tensor for {', '.join(missing[:5])}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in restored.items()}, strict=False)
    checkpoint.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(checkpoint, safe_serialization=True)
    for name in _KEPT:
        if (source / name).is_file():
            shutil.copy2(source / name, checkpoint / name)
    for pattern in DOC_PATTERNS:
        for path in source.glob(pattern):
            shutil.copy2(path, checkpoint / path.name)
    sidecar = {
        "name": manifest.name,
        "licence": manifest.licence,
        "max_positions": manifest.max_positions,
        "prompt": dataclasses.asdict(manifest.prompt) if manifest.prompt else None,
    }
    sidecar = {k: v for k, v in sidecar.items() if v is not None}
    (checkpoint / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return manifest


def reexport(
    source: Path,
    out: Path,
    precision: Precision,
    keep_checkpoint: Path | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export `source` (an exported model directory) again to `out` at `precision`; the
    restored checkpoint is kept in `keep_checkpoint` when given (for `verify --reference`)."""
    if out.resolve() == source.resolve():
        raise ExportError(f"reexport writes a new directory: --out is {source} itself")
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = keep_checkpoint or Path(scratch) / "checkpoint"
        restored_checkpoint(source, checkpoint)
        return export_checkpoint(checkpoint, out, precision, progress=progress)
