"""A model directory: the ONNX graph and its weights, the tokenizer and licence files, and
the manifest (`subtitled.translate.manifest`) the daemon checks before loading.

Export from a Hugging Face checkpoint directory (`export_checkpoint`) reads the
safetensors lazily, one tensor at a time, so memory stays near the largest single tensor.
Its `subtitled.json`, when present (written by `python -m export train`), names the model,
its licence, prompt template and trained context; otherwise the family's default prompt
(`export.prompts`) and the `--licence` flag are used. No torch here except through the
safetensors reader (bf16 tensors need it).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from export.checkpoint import SafetensorsCheckpoint, load_config
from export.errors import ConfigKeyError, ExportError
from export.families import spec_from_config
from export.onnx_attention import length_slots
from export.onnx_graph import write_model
from export.onnx_ops import Progress, Weights
from export.plan import Precision
from export.prompts import PROMPTS
from export.spec import ModelSpec
from subtitled.translate.contract import (
    CACHE_LENGTHS,
    INPUT_IDS,
    LOGITS,
    LOGITS_ROWS,
    MANIFEST_FILE,
    MODEL_FILE,
    POSITION_IDS,
    TOKENIZER_FILE,
    past_name,
    present_name,
)
from subtitled.translate.digests import sha256_of
from subtitled.translate.manifest import (
    KvLayer,
    Manifest,
    PromptTemplate,
    TensorInfo,
    file_entry,
    load_manifest,
)

log = logging.getLogger(__name__)
REFERENCE_DIR = "reference"  # random-weight exports: the transformers checkpoint
REFERENCE_LINK = "reference.json"  # checkpoint exports: where the checkpoint was
SIDECAR = "subtitled.json"
# Copied beside the model when the checkpoint has them.
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)
DOC_PATTERNS = ("README.md", "MODEL_CARD.md", "LICENSE*", "ATTRIBUTION*", "NOTICE*")


def io_of(
    spec: ModelSpec, shared_cache: bool = True
) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...], tuple[KvLayer, ...]]:
    """Graph inputs, outputs and the KV layout per layer, as the manifest lists them."""
    inputs = [
        TensorInfo(INPUT_IDS, "int64", ("batch", "sequence")),
        TensorInfo(POSITION_IDS, "int64", ("batch", "sequence")),
    ]
    outputs = [TensorInfo(LOGITS, "float32", ("batch", "rows", spec.vocab_size))]
    slots = length_slots(spec, shared_cache)
    if slots:
        inputs.append(TensorInfo(CACHE_LENGTHS, "int64", (len(set(slots.values())),)))
    inputs.append(TensorInfo(LOGITS_ROWS, "int64", (1,)))
    layout = []
    for layer in spec.layers:
        a = layer.attention
        tensors = a.cached(shared_cache)
        layout.append(
            KvLayer(
                layer.index,
                a.kind,
                tensors,
                a.n_kv_heads,
                a.head_dim,
                a.window,
                slots.get(layer.index),
            )
        )
        for t in tensors:
            inputs.append(
                TensorInfo(
                    past_name(layer.index, t),
                    "float32",
                    ("batch", a.n_kv_heads, f"past_{layer.index}", a.head_dim),
                )
            )
            outputs.append(
                TensorInfo(
                    present_name(layer.index, t),
                    "float32",
                    ("batch", a.n_kv_heads, f"present_{layer.index}", a.head_dim),
                )
            )
    return tuple(inputs), tuple(outputs), tuple(layout)


@dataclass(frozen=True)
class Sidecar:
    """A checkpoint's `subtitled.json`: every key optional."""

    name: str | None = None
    licence: str | None = None
    prompt: Mapping[str, Any] | None = None
    max_positions: int | None = None


def read_sidecar(directory: Path) -> Sidecar:
    """Read `directory/subtitled.json` (absent: all None); errors name the key."""
    path = directory / SIDECAR
    if not path.is_file():
        return Sidecar()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigKeyError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigKeyError(f"{path} must hold a JSON object")
    kinds: dict[str, type] = {"name": str, "licence": str, "prompt": dict, "max_positions": int}
    for key, value in data.items():
        kind = kinds.get(key)
        if kind is None:
            raise ConfigKeyError(f"{path}: unknown key {key!r}; allowed: {', '.join(kinds)}")
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise ConfigKeyError(f"{path}: key {key!r} must be {kind.__name__}, got {value!r}")
    return Sidecar(**data)


def prompt_template(
    model_type: str, override: Mapping[str, Any] | None, source: str
) -> PromptTemplate | None:
    """The family's default template with `override`'s fields replacing its own."""
    base = PROMPTS.get(model_type)
    if base is None and override is None:
        return None
    values: dict[str, Any] = {}
    if base is not None:
        values = {f.name: getattr(base, f.name) for f in fields(PromptTemplate)}
    allowed = [f.name for f in fields(PromptTemplate)]
    for key, value in (override or {}).items():
        if key not in allowed:
            raise ConfigKeyError(f"{source}: prompt key {key!r} unknown; allowed: {allowed}")
        values[key] = value
    optional = {"sentence_words"}
    missing = [key for key in allowed if key not in values and key not in optional]
    if missing:
        raise ConfigKeyError(f"{source}: prompt keys missing: {', '.join(missing)}")
    stop = values["stop"]
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigKeyError(f"{source}: prompt key 'stop' must list non-empty strings")
    if "{source}" not in str(values["source_turn"]):
        raise ConfigKeyError(f"{source}: prompt key 'source_turn' must contain {{source}}")
    for key in ("preamble", "source_turn", "target_end"):
        if not isinstance(values[key], str):
            raise ConfigKeyError(f"{source}: prompt key {key!r} must be a string")
    languages = values["languages"]
    if not isinstance(languages, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in languages.items()
    ):
        raise ConfigKeyError(f"{source}: prompt key 'languages' must map codes to names")
    sentence_words = values.get("sentence_words", 0)
    if type(sentence_words) is not int or sentence_words < 0:
        raise ConfigKeyError(f"{source}: prompt key 'sentence_words' must be an integer >= 0")
    return PromptTemplate(
        preamble=values["preamble"],
        source_turn=values["source_turn"],
        target_end=values["target_end"],
        stop=tuple(stop),
        languages=dict(languages),
        sentence_words=sentence_words,
    )


@dataclass(frozen=True)
class Describe:
    """What the manifest says beside the graph."""

    name: str
    licence: str
    tokenizer: str | None = None
    prompt: PromptTemplate | None = None
    max_positions: int | None = None


def write_model_dir(
    spec: ModelSpec,
    weights: Weights,
    out: Path,
    precision: Precision,
    describe: Describe,
    extra_files: list[str],
    progress: Progress | None = None,
) -> Manifest:
    """Write the graph and its weights to `out`, then the manifest listing them and
    `extra_files` (already in `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    written = write_model(spec, weights, out / MODEL_FILE, precision, progress)
    files = [p.name for p in written] + extra_files
    inputs, outputs, layout = io_of(spec, precision.shared_cache)
    manifest = Manifest(
        name=describe.name,
        architecture=spec.model_type,
        precision=precision.name,
        licence=describe.licence,
        files=tuple(file_entry(out, f) for f in files),
        inputs=inputs,
        outputs=outputs,
        kv_layout=layout,
        tokenizer=describe.tokenizer,
        prompt=describe.prompt,
        max_positions=describe.max_positions,
    )
    manifest.write(out)
    return manifest


def copy_side_files(source: Path, out: Path) -> list[str]:
    names = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    for pattern in DOC_PATTERNS:
        names += sorted(p.name for p in source.glob(pattern) if p.is_file())
    for name in names:
        shutil.copy2(source / name, out / name)
    return names


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    precision: Precision,
    licence: str | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export the Hugging Face checkpoint directory `checkpoint` to the model directory
    `out`, reading its safetensors one tensor at a time."""
    if not checkpoint.is_dir():
        raise ExportError(f"checkpoint directory {checkpoint} does not exist")
    config = load_config(checkpoint / "config.json")
    spec = spec_from_config(config)
    sidecar = read_sidecar(checkpoint)
    weights = SafetensorsCheckpoint(checkpoint)
    licence = licence or sidecar.licence
    if licence is None:
        raise ExportError(
            f"the licence of {checkpoint} is unknown: pass --licence TEXT or add "
            f"'licence' to {checkpoint / SIDECAR}"
        )
    out.mkdir(parents=True, exist_ok=True)
    side_files = copy_side_files(checkpoint, out)
    tokenizer = TOKENIZER_FILE if TOKENIZER_FILE in side_files else None
    if tokenizer is None:
        log.warning("%s has no %s: the manifest names no tokenizer", checkpoint, TOKENIZER_FILE)
    describe = Describe(
        name=name or sidecar.name or checkpoint.resolve().name,
        licence=licence,
        tokenizer=tokenizer,
        prompt=prompt_template(spec.model_type, sidecar.prompt, str(checkpoint / SIDECAR)),
        max_positions=sidecar.max_positions or spec.max_position_embeddings,
    )
    manifest = write_model_dir(spec, weights, out, precision, describe, side_files, progress)
    # Not listed in the manifest: a path on the exporting machine, for `verify` only.
    (out / REFERENCE_LINK).write_text(
        json.dumps({"checkpoint": str(checkpoint.resolve())}) + "\n", encoding="utf-8"
    )
    return manifest


def export_gguf(
    path: Path,
    out: Path,
    precision: Precision,
    licence: str | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export a GGUF file (llama.cpp, Ollama, LM Studio) to the model directory `out`:
    the config from its metadata, its tokenizer converted to `tokenizer.json`, its tensors
    dequantised one at a time and written at `precision`."""
    from export.gguf_config import hf_config
    from export.gguf_file import GgufFile, GgufWeights, hf_tokenizer_json

    gguf = GgufFile(path)
    if gguf.unmapped:
        raise ExportError(
            f"{path}: tensors with no place in the {gguf.architecture!r} export: "
            f"{', '.join(gguf.unmapped[:5])}{' ...' if len(gguf.unmapped) > 5 else ''}"
        )
    config = hf_config(gguf)
    spec = spec_from_config(config)
    file_licence = gguf.metadata.get("general.license")
    if licence is None and file_licence:
        licence = f"{file_licence} (from the GGUF file's general.license)"
    if licence is None:
        raise ExportError(
            f"the licence of {path} is unknown (no general.license in the file): pass "
            "--licence TEXT"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / TOKENIZER_FILE).write_text(hf_tokenizer_json(gguf), encoding="utf-8")
    describe = Describe(
        name=name or str(gguf.metadata.get("general.name") or path.stem),
        licence=licence,
        tokenizer=TOKENIZER_FILE,
        prompt=prompt_template(spec.model_type, None, str(path)),
        max_positions=spec.max_position_embeddings,
    )
    return write_model_dir(
        spec, GgufWeights(gguf), out, precision, describe, [TOKENIZER_FILE, "config.json"],
        progress,
    )


def _is_doc(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in DOC_PATTERNS)


def amend_model_dir(directory: Path, prompt: Mapping[str, Any]) -> Manifest:
    """Rewrite `directory`'s manifest with `prompt`'s keys replacing its prompt template's,
    and the sizes and sha256 of its documentation files (model card, licence, attribution)
    re-recorded. The graph, weights and tokenizer must still match their sha256: amending
    never blesses a changed model."""
    manifest = load_manifest(directory, check_files=False)
    where = str(directory / MANIFEST_FILE)
    for entry in manifest.files:
        path = directory / entry.path
        if _is_doc(entry.path):
            if not path.is_file():
                raise ExportError(f"documentation file {path} listed in {where} is missing")
        elif not path.is_file() or sha256_of(path) != entry.sha256:
            raise ExportError(
                f"model file {path} does not match its sha256 in {where}: re-export the "
                "model instead of amending its manifest"
            )
    if manifest.prompt is None and prompt:
        raise ExportError(f"{where} has no prompt template to amend")
    template = manifest.prompt
    if template is not None:
        template = prompt_template(manifest.architecture, {**asdict(template), **prompt}, where)
    files = tuple(file_entry(directory, e.path) if _is_doc(e.path) else e for e in manifest.files)
    amended = replace(manifest, prompt=template, files=files)
    amended.write(directory)
    return amended
