"""Configuration: a TOML file in the XDG config dir, then command-line flags on top.

Every section is a frozen dataclass owned by the stage it configures, so a key has
one definition, one default and one docstring. `load_config` validates the whole
file once: an unknown key or a value of the wrong type is a `ConfigError` that
names the key and what is allowed.

    # ~/.config/subtitled/config.toml
    [capture]
    source = "monitor"          # a device name or index, "monitor", "file:PATH", "stdin"
    [asr]
    model = "tiny.en"
    [server]
    port = 8765
    [translation]
    targets = ["de", "es"]      # none: captions only
    model = "bundled"           # or a model directory made by `python -m export`
    [power]
    profile = "auto"            # battery profile on battery; or "performance", "battery"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from subtitled.asr.stream import StreamConfig
from subtitled.asr.whisper import WhisperConfig
from subtitled.errors import ConfigError
from subtitled.power import PowerConfig
from subtitled.publish import ServerConfig
from subtitled.translate.config import TranslationConfig, moved_key, nest_moved_keys


@dataclass(frozen=True)
class CaptureConfig:
    """Where audio comes from."""

    source: str = "default"
    """'default' (the default input device), a device name or index, 'monitor'
    (what the machine plays), 'file:PATH', or 'stdin' (s16le mono 16 kHz)."""
    block_s: float = 0.1
    """Capture block length: audio reaches the ASR in steps of this size."""


@dataclass(frozen=True)
class JournalConfig:
    """The transcript journal `subtitled run` keeps (see `subtitled.publish.journal`)."""

    enabled: bool = True
    path: Path | None = None
    """Default: $XDG_STATE_HOME/subtitled/journal.jsonl."""


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    capture: CaptureConfig = field(default_factory=CaptureConfig)
    asr: WhisperConfig = field(default_factory=WhisperConfig)
    streaming: StreamConfig = field(default_factory=StreamConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    power: PowerConfig = field(default_factory=PowerConfig)


WHISPER_TARGET = "en"
"""The one target Whisper's translate task produces."""


@dataclass(frozen=True)
class LanguagePlan:
    """Which stage produces which language (`plan_languages`)."""

    asr: WhisperConfig
    translation: TranslationConfig
    """The targets the translation model serves (English-source text in, as today)."""
    whisper_targets: tuple[str, ...]
    """Targets the ASR itself produces: ('en',) with Whisper's translate task, or ()."""


def plan_languages(config: Config) -> LanguagePlan:
    """Split the targets between Whisper and the translation model.

    English wanted from speech that is not (known to be) English is Whisper's own translate
    task: the caption words are then English, and the 'en' track is those words. Other
    targets go to the translation model, which reads the English captions. English speech
    (`asr.language = "en"`) keeps every target on the translation model, as before.
    """
    asr, translation = config.asr, config.translation
    if WHISPER_TARGET not in translation.targets:
        return LanguagePlan(asr, translation, ())
    if asr.task == "transcribe" and asr.language == "en":
        return LanguagePlan(asr, translation, ())
    rest = tuple(t for t in translation.targets if t != WHISPER_TARGET)
    return LanguagePlan(
        dataclasses.replace(asr, task="translate"),
        dataclasses.replace(translation, targets=rest),
        (WHISPER_TARGET,),
    )


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/subtitled/config.toml` (default `~/.config/...`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "subtitled" / "config.toml"


def load_config(path: Path | None = None, *, explicit: bool = False) -> Config:
    """Read and validate a config file. A missing default file means all defaults.

    `explicit` marks a path the user gave: then a missing file is an error too.
    """
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if isinstance(data.get("translation"), dict):
            data["translation"] = nest_moved_keys(data["translation"])
        return build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


T = TypeVar("T")


def build(cls: type[T], data: Any, prefix: str) -> T:
    """Build dataclass `cls` from a TOML table, checking every key and value."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"unknown key {key!r}; allowed in {where}: {', '.join(sorted(fields))}")
    values = {name: _convert(hints[name], value, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def replace_path(config: T, key: str, value: Any, _prefix: str = "") -> T:
    """Return `config` with the dotted `key` (e.g. 'server.port') set and validated."""
    if not _prefix and key.startswith("translation."):
        moved = moved_key(key.removeprefix("translation."))
        key = key if moved is None else f"translation.{moved}"
    head, _, rest = key.partition(".")
    where = _prefix.rstrip(".") or "the top level"
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"unknown key {_prefix + key!r}: {where} is a value, not a section")
    names = sorted(f.name for f in dataclasses.fields(config) if f.init)
    if head not in names:
        raise ConfigError(f"unknown key {_prefix + key!r}; allowed in {where}: {', '.join(names)}")
    if rest:
        new = replace_path(getattr(config, head), rest, value, f"{_prefix}{head}.")
    else:
        hints = typing.get_type_hints(type(config))
        new = _convert(hints[head], value, _prefix + key)
    try:
        return dataclasses.replace(config, **{head: new})  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_prefix + key}: {exc}") from exc


def with_overrides(config: Config, flags: dict[str, Any], sets: list[str]) -> Config:
    """`config` with command-line values on top: `flags` maps dotted keys to values
    (None: not given), `sets` are `--set KEY=VALUE` items (VALUE in TOML syntax, or a
    bare word taken as a string). Every value is validated like the file's."""
    for key, value in flags.items():
        if value is not None:
            config = replace_path(config, key, value)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        config = replace_path(config, key.strip(), value)
    return config


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, value, key + ".")
    if origin in (types.UnionType, typing.Union):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; use one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin is tuple:
        item = get_args(hint)[0]
        if isinstance(value, str):  # "de,es" (or "none") from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
            if [v.lower() for v in value] == ["none"]:
                value = []
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{key}: expected a path string, got {_describe(value)}")
        return Path(value).expanduser()
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
