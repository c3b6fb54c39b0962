"""Where translation models are found, and the factory that loads the configured one.

`translation.model = "bundled"` (the default) is the small model shipped in `models/`
(`BUNDLED_MODEL`); another bare name is a folder in a models directory; anything with a
path separator is a model directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from subtitled.errors import ModelError
from subtitled.translate.config import TranslationConfig
from subtitled.translate.contract import MANIFEST_FILE
from subtitled.translate.manifest import load_manifest
from subtitled.translate.stream import Translator

log = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_MODEL = "subtitled-gemma3-translate"
"""The folder name of the bundled model in `models/`."""


def models_dirs() -> tuple[Path, ...]:
    """The `models/` folders searched: inside the installed package, then the checkout's."""
    package = Path(__file__).resolve().parents[1]
    return (package / "models", package.parent / "models")


def installed_models() -> list[Path]:
    """Every directory with a manifest in the models folders."""
    found: list[Path] = []
    for base in models_dirs():
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if (p / MANIFEST_FILE).is_file())
    return found


def resolve_model(name: str) -> Path:
    """The directory of the configured model; a missing one is a `ModelError`."""
    if "/" in name or name.startswith((".", "~")):
        path = Path(name).expanduser()
        if not (path / MANIFEST_FILE).is_file():
            raise ModelError(f"translation model {path}: no {MANIFEST_FILE} there")
        return path
    wanted = BUNDLED_MODEL if name == BUNDLED else name
    for base in models_dirs():
        if (base / wanted / MANIFEST_FILE).is_file():
            return base / wanted
    searched = ", ".join(str(b) for b in models_dirs())
    raise ModelError(f"translation model {wanted!r} is not installed (searched {searched})")


@dataclass(frozen=True)
class ModelStatus:
    """One installed model as `subtitled models` lists it."""

    path: Path
    name: str
    verified: bool
    detail: str


def check_models() -> list[ModelStatus]:
    """Verify every installed model's manifest and files."""
    statuses = []
    for path in installed_models():
        try:
            manifest = load_manifest(path)
        except ModelError as exc:
            statuses.append(ModelStatus(path, path.name, False, str(exc)))
            continue
        ready = manifest.tokenizer is not None and manifest.prompt is not None
        languages = ", ".join(sorted(manifest.prompt.languages)) if manifest.prompt else ""
        detail = f"{manifest.architecture} {manifest.precision}" + (
            f", languages {languages}" if languages else ""
        ) + ("" if ready else ", no tokenizer/prompt: cannot translate")
        statuses.append(ModelStatus(path, manifest.name, ready, detail))
    return statuses


def load_translator(config: TranslationConfig, reuse: bool = True) -> Translator:
    """Build the configured backend for `config.targets` (blocking: loads the model)."""
    if not config.targets:
        raise ModelError("no target language configured")
    if config.backend == "openai":
        from subtitled.translate.openai import OpenAiTranslator

        return OpenAiTranslator(config)
    from subtitled.translate.policy import DecodePolicy
    from subtitled.translate.runtime import OnnxModel, RuntimeConfig
    from subtitled.translate.stream import OnnxTranslator

    model = OnnxModel(
        resolve_model(config.model), RuntimeConfig(threads=config.threads,
                                                   provider=config.provider)
    )
    rules = config.policy
    policy = DecodePolicy(agreement=rules.agreement, max_new_tokens=rules.max_new_tokens)
    return OnnxTranslator(model, config.targets, policy, context_tokens=rules.context_tokens,
                          reuse=reuse, sentence_words=rules.sentence_words)
