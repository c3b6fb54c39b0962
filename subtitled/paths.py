"""Where subtitled keeps what it can make again (the XDG cache directory)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/subtitled` (default `~/.cache/subtitled`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "subtitled"
