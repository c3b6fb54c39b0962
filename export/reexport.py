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
import tempfile
from pathlib import Path

from export.checkpoint import load_config
from export.errors import ExportError
from export.model_dir import REFERENCE_LINK, SIDECAR, copy_side_files, export_checkpoint
from export.onnx_ops import Progress
from export.plan import Precision
from subtitled.translate.manifest import Manifest, load_manifest


def restored_checkpoint(source: Path, checkpoint: Path) -> Manifest:
    """Write `source`'s weights, config, tokenizer, `subtitled.json` and documents as a
    Hugging Face checkpoint directory `checkpoint`; returns `source`'s manifest."""
    from export.reference import random_model
    from export.restore import restore_into

    manifest = load_manifest(source)
    config = load_config(source / "config.json")
    model = random_model(config)
    restore_into(model, config, source)
    checkpoint.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(checkpoint, safe_serialization=True)
    copy_side_files(source, checkpoint)  # tokenizer files, generation config, documents
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
        manifest = export_checkpoint(checkpoint, out, precision, progress=progress)
        if keep_checkpoint is None:  # the link would name a checkpoint deleted below
            (out / REFERENCE_LINK).unlink(missing_ok=True)
        return manifest
