"""Errors raised by the export tooling, rooted in subtitled's tree.

ExportError (a SubtitledError)
 ├── UnsupportedArchitecture  the config's model_type has no reader, or uses a feature not built yet
 └── ConfigKeyError           a config key is missing or holds a value of the wrong type
"""

from __future__ import annotations

from subtitled.errors import SubtitledError


class ExportError(SubtitledError):
    """Root of the errors `python -m export` raises on purpose."""

    exit_code = 2


class UnsupportedArchitecture(ExportError):
    """The config names an architecture (or an architecture feature) export cannot handle."""


class ConfigKeyError(ExportError):
    """A config key is missing, or its value has the wrong type or range."""
