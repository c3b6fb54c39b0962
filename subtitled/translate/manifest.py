"""The manifest of an exported model directory: what is in it and how to feed it.

Written once by `python -m export`, read by the daemon before it loads a model: files
with their sha256, graph inputs/outputs, the KV-cache layout per layer, licence. The schema
lives here, in the runtime package, so export and daemon cannot drift apart; it needs
only json, dataclasses and hashlib. Digests of unchanged files are remembered across
starts (`subtitled.translate.digests`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from subtitled.errors import ModelError
from subtitled.translate.contract import MANIFEST_FILE
from subtitled.translate.digests import DigestCache, sha256_of

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output; symbolic dimensions are strings (`batch`, `past_sequence`)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class KvLayer:
    """The cache of one layer: which tensors it keeps (K=V layers keep only `value`), each
    shaped (batch, n_kv_heads, tokens, head_dim).

    Without `length_slot` the past holds exactly the cached tokens and the present returns
    them plus the new ones (at most the last `window` when set). With it, past and present
    are one buffer of any capacity: the graph input `cache_lengths[length_slot]` says how
    many tokens at its start are held, the call writes its tokens after them (attending to
    at most the last `window`), and the present has the past's capacity, or held + new
    tokens if that is larger. Bound to the same memory, nothing is copied.
    """

    layer: int
    kind: str
    tensors: tuple[str, ...]
    n_kv_heads: int
    head_dim: int
    window: int | None
    length_slot: int | None = None


@dataclass(frozen=True)
class FileEntry:
    """A file of the model directory, relative path, with its size and sha256."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PromptTemplate:
    """How a translation conversation becomes text, turn by turn.

    A conversation is `preamble`, then for each finished sentence `source_turn` followed by
    its translation and `target_end`, then the open sentence's `source_turn` and the
    translation being decoded. `source_turn` holds `{source}` and may hold `{language}` (the
    target language's name, e.g. "German") and `{code}` (e.g. "de"). Decoding stops at any
    of `stop` (token strings). `languages` maps the target codes the model knows to their
    names; empty means any language the model can be asked for by name. `sentence_words`,
    when above 0, is the longest source (in words) the model translates well in one piece:
    longer sentences are translated clause by clause (see `policy.clause_cut`).
    """

    preamble: str
    source_turn: str
    target_end: str
    stop: tuple[str, ...]
    languages: dict[str, str]
    sentence_words: int = 0

    def turn(self, source: str, code: str) -> str:
        """The text of one source turn asking for language `code`."""
        name = self.languages.get(code, code)
        return (
            self.source_turn.replace("{language}", name)
            .replace("{code}", code)
            .replace("{source}", source)
        )


@dataclass(frozen=True)
class Manifest:
    """Everything the daemon needs to know about a model before loading it.

    `tokenizer` (a `tokenizers` JSON file in the directory) and `prompt` are absent from
    models exported for architecture tests only; a translation runtime requires both.
    `max_positions` is the longest sequence the model was built or trained for.
    """

    name: str
    architecture: str
    precision: str
    licence: str
    files: tuple[FileEntry, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    kv_layout: tuple[KvLayer, ...]
    tokenizer: str | None = None
    prompt: PromptTemplate | None = None
    max_positions: int | None = None

    def to_json(self) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSION, **asdict(self)}, indent=2) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def file_entry(directory: Path, relative: str) -> FileEntry:
    path = directory / relative
    return FileEntry(relative, path.stat().st_size, sha256_of(path))


def _field(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ModelError(f"manifest {where}: key {key!r} is missing")
    value = data[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ModelError(f"manifest {where}: key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _tensor(data: Any, where: str) -> TensorInfo:
    if not isinstance(data, dict):
        raise ModelError(f"manifest {where}: must be an object")
    shape = _field(data, "shape", list, where)
    if not all(isinstance(d, int | str) and not isinstance(d, bool) for d in shape):
        raise ModelError(f"manifest {where}: key 'shape' must hold integers and names")
    return TensorInfo(
        _field(data, "name", str, where), _field(data, "dtype", str, where), tuple(shape)
    )


def _kv_layer(data: Any, where: str) -> KvLayer:
    if not isinstance(data, dict):
        raise ModelError(f"manifest {where}: must be an object")
    window = data.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise ModelError(f"manifest {where}: key 'window' must be an integer or null")
    tensors = _field(data, "tensors", list, where)
    if not tensors or not set(tensors) <= {"key", "value"}:
        raise ModelError(f"manifest {where}: key 'tensors' must list 'key' and/or 'value'")
    slot = _optional(data, "length_slot", int, where)
    if slot is not None and slot < 0:
        raise ModelError(f"manifest {where}: key 'length_slot' must be >= 0")
    return KvLayer(
        _field(data, "layer", int, where),
        _field(data, "kind", str, where),
        tuple(tensors),
        _field(data, "n_kv_heads", int, where),
        _field(data, "head_dim", int, where),
        window,
        slot,
    )


def _file(data: Any, where: str) -> FileEntry:
    if not isinstance(data, dict):
        raise ModelError(f"manifest {where}: must be an object")
    return FileEntry(
        _field(data, "path", str, where),
        _field(data, "bytes", int, where),
        _field(data, "sha256", str, where),
    )


def _prompt(data: Any, where: str) -> PromptTemplate | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ModelError(f"manifest {where}: must be an object or null")
    stop = _field(data, "stop", list, where)
    if not stop or not all(isinstance(s, str) and s for s in stop):
        raise ModelError(f"manifest {where}: key 'stop' must list non-empty token strings")
    languages = _field(data, "languages", dict, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in languages.items()):
        raise ModelError(f"manifest {where}: key 'languages' must map codes to names")
    source_turn = _field(data, "source_turn", str, where)
    if "{source}" not in source_turn:
        raise ModelError(f"manifest {where}: key 'source_turn' must contain {{source}}")
    sentence_words = _optional(data, "sentence_words", int, where) or 0
    if sentence_words < 0:
        raise ModelError(f"manifest {where}: key 'sentence_words' must be >= 0")
    return PromptTemplate(
        preamble=_field(data, "preamble", str, where),
        source_turn=source_turn,
        target_end=_field(data, "target_end", str, where),
        stop=tuple(stop),
        languages=dict(languages),
        sentence_words=sentence_words,
    )


def _optional(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if data.get(key) is None:
        return None
    return _field(data, key, kind, where)


def parse_manifest(text: str, source: str = MANIFEST_FILE) -> Manifest:
    """Parse a manifest; errors name the source and the key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"manifest {source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"manifest {source} must hold a JSON object")
    version = _field(data, "schema_version", int, source)
    if version != SCHEMA_VERSION:
        raise ModelError(f"manifest {source}: schema_version {version} is not {SCHEMA_VERSION}")

    def items(key: str) -> list[Any]:
        value: list[Any] = _field(data, key, list, source)
        return value

    return Manifest(
        name=_field(data, "name", str, source),
        architecture=_field(data, "architecture", str, source),
        precision=_field(data, "precision", str, source),
        licence=_field(data, "licence", str, source),
        files=tuple(_file(f, f"{source} files[{i}]") for i, f in enumerate(items("files"))),
        inputs=tuple(_tensor(t, f"{source} inputs[{i}]") for i, t in enumerate(items("inputs"))),
        outputs=tuple(_tensor(t, f"{source} outputs[{i}]") for i, t in enumerate(items("outputs"))),
        kv_layout=tuple(
            _kv_layer(k, f"{source} kv_layout[{i}]") for i, k in enumerate(items("kv_layout"))
        ),
        tokenizer=_optional(data, "tokenizer", str, source),
        prompt=_prompt(data.get("prompt"), f"{source} prompt"),
        max_positions=_optional(data, "max_positions", int, source),
    )


def load_manifest(
    directory: Path, check_files: bool = True, *, remembered: bool = True
) -> Manifest:
    """Read `directory/manifest.json` and, by default, check every file's size and sha256:
    a digest remembered for an unchanged file (`DigestCache`) unless not `remembered`."""
    path = directory / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read manifest {path}: {exc.strerror}") from exc
    manifest = parse_manifest(text, str(path))
    if check_files:
        digests = DigestCache() if remembered else None
        for entry in manifest.files:
            file = directory / entry.path
            if not file.is_file():
                raise ModelError(f"model file {file} listed in {path} is missing")
            size = file.stat().st_size
            if size != entry.bytes:
                raise ModelError(
                    f"model file {file} does not match its sha256 in {path}: it has {size} "
                    f"bytes, the manifest {entry.bytes}"
                )
            digest = digests.sha256(file) if digests is not None else sha256_of(file)
            if digest != entry.sha256:
                raise ModelError(f"model file {file} does not match its sha256 in {path}")
    return manifest
