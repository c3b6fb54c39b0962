"""Where local LLM apps keep GGUF files, read offline and never written.

- Ollama: `$OLLAMA_MODELS`, else `~/.ollama/models`, else the system service's
  `/usr/share/ollama/.ollama/models`. A model `NAME[:TAG]` (tag `latest` by default;
  `NAMESPACE/NAME` for community models) is a JSON manifest under
  `manifests/registry.ollama.ai/{namespace or library}/{name}/{tag}` whose layer of media
  type `application/vnd.ollama.image.model` names the GGUF blob
  (`blobs/sha256-{hex}`).
- LM Studio: `$LMSTUDIO_MODELS`, else `~/.lmstudio/models`, else the older
  `~/.cache/lm-studio/models`: `PUBLISHER/REPO/FILE.gguf`.

`resolve_model` turns `ollama:NAME[:TAG]`, `lmstudio:PUBLISHER/REPO[/FILE.gguf]` or a path
into a GGUF path (or the checkpoint directory it was given); `find_gguf_models` lists what
both stores hold, for `subtitled models`. Here, not in `export/`, so that the runtime
install (which has no `export`) can list them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from subtitled.errors import ConfigError

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"


def ollama_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """Ollama model stores to look in, first match wins."""
    env = os.environ if env is None else env
    if env.get("OLLAMA_MODELS"):
        return [Path(env["OLLAMA_MODELS"])]
    home = Path(env.get("HOME") or Path.home())
    return [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def lmstudio_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    if env.get("LMSTUDIO_MODELS"):
        return [Path(env["LMSTUDIO_MODELS"])]
    home = Path(env.get("HOME") or Path.home())
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


@dataclass(frozen=True)
class FoundModel:
    """A GGUF model in a local store, with the `--model` value that exports it."""

    reference: str
    path: Path
    bytes: int


def _ollama_manifest_path(root: Path, name: str) -> Path:
    model, _, tag = name.partition(":")
    namespace, _, short = model.rpartition("/")
    repository = root / "manifests" / OLLAMA_REGISTRY / (namespace or "library")
    return repository / short / (tag or "latest")


def _ollama_blob(root: Path, manifest: Path) -> Path:
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        digest = next(
            str(layer["digest"]) for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER
        )
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ConfigError(f"Ollama manifest {manifest} names no model layer: {exc!r}") from exc
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise ConfigError(f"Ollama manifest {manifest} names {digest}, but {blob} is missing")
    return blob


def resolve_ollama(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The GGUF blob of Ollama model `name` (`gemma3:270m`, `qwen3`, `user/model:tag`)."""
    if not name or any(part in ("", ".", "..") for part in name.replace(":", "/").split("/")):
        raise ConfigError(f"ollama:{name} is not an Ollama model name (NAME[:TAG])")
    roots = ollama_roots(env)
    for root in roots:
        manifest = _ollama_manifest_path(root, name)
        if manifest.is_file():
            return _ollama_blob(root, manifest)
    looked = ", ".join(str(r) for r in roots)
    raise ConfigError(
        f"Ollama model {name!r} is not in {looked} (pull it with `ollama pull {name}`; "
        "OLLAMA_MODELS names another store)"
    )


def resolve_lmstudio(name: str, env: Mapping[str, str] | None = None) -> Path:
    """A GGUF file in LM Studio's models folder: `PUBLISHER/REPO` (its only or first
    GGUF) or `PUBLISHER/REPO/FILE.gguf`."""
    roots = lmstudio_roots(env)
    for root in roots:
        target = root / name
        if target.is_file():
            return target
        if target.is_dir():
            files = sorted(target.glob("*.gguf"))
            weights = [f for f in files if not f.name.startswith("mmproj")]
            if len(weights) == 1:
                return weights[0]
            if weights:
                names = ", ".join(f.name for f in weights)
                raise ConfigError(f"lmstudio:{name} holds several GGUF files; name one: {names}")
    looked = ", ".join(str(r) for r in roots)
    raise ConfigError(f"LM Studio model {name!r} is not in {looked}")


def resolve_model(value: str, env: Mapping[str, str] | None = None) -> Path:
    """`--model`'s value as a path: `ollama:...` and `lmstudio:...` looked up, a path kept."""
    if value.startswith("ollama:"):
        return resolve_ollama(value.removeprefix("ollama:"), env)
    if value.startswith("lmstudio:"):
        return resolve_lmstudio(value.removeprefix("lmstudio:"), env)
    return Path(value)


def _ollama_models(root: Path) -> Iterator[FoundModel]:
    base = root / "manifests" / OLLAMA_REGISTRY
    for manifest in sorted(base.glob("*/*/*")):
        if not manifest.is_file():
            continue
        namespace, model, tag = manifest.relative_to(base).parts
        name = model if namespace == "library" else f"{namespace}/{model}"
        try:
            blob = _ollama_blob(root, manifest)
        except ConfigError:
            continue  # an embedding-only or half-pulled model: nothing to export
        yield FoundModel(f"ollama:{name}:{tag}", blob, blob.stat().st_size)


def find_gguf_models(env: Mapping[str, str] | None = None) -> list[FoundModel]:
    """Every GGUF model in the Ollama and LM Studio stores on this machine."""
    found: list[FoundModel] = []
    for root in ollama_roots(env):
        if root.is_dir():
            found += _ollama_models(root)
    for root in lmstudio_roots(env):
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*/*/*.gguf")):
            if not path.name.startswith("mmproj"):
                reference = f"lmstudio:{path.relative_to(root).as_posix()}"
                found.append(FoundModel(reference, path, path.stat().st_size))
    return found
