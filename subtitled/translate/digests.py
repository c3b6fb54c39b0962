"""sha256 of model files, remembered across starts.

A model's manifest pins every file's sha256 and loading checks them: 0.13 s for the
bundled 148 MB model, a quarter of a minute for a 16 GB Gemma 4 export, at every start.
A digest is remembered in `$XDG_CACHE_HOME/subtitled/digests.json` beside the file's
identity and stat (device, inode, size, mtime and ctime in ns). A file that was
rewritten, copied, replaced or touched differs in one of them and is read again in full;
what a remembered digest cannot notice is a change that leaves all of them alone (a
disk corrupting data in place), which `python -m export verify` (a full read) does.

The cache is an optimisation only: a missing, unreadable or corrupt cache file, or a
cache directory that cannot be written, means the files are hashed as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from subtitled.paths import cache_root

log = logging.getLogger(__name__)

CACHE_NAME = "digests.json"
VERSION = 1
MAX_ENTRIES = 512
"""Oldest entries are dropped beyond this (a few per model; re-exports add more)."""


def sha256_of(path: Path) -> str:
    """The sha256 of `path`, read in full."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


class DigestCache:
    """Remembered digests in one JSON file (`cache_root()/digests.json` by default),
    read once per instance (one per model load)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_root() / CACHE_NAME
        self._entries: dict[str, Any] | None = None

    def sha256(self, path: Path) -> str:
        """`path`'s sha256: remembered when its identity and stat are unchanged, else read
        in full (and remembered)."""
        key = str(path.resolve())
        identity = _identity(path.stat())
        if self._entries is None:
            self._entries = self._read()
        entries = self._entries
        entry = entries.get(key)
        if isinstance(entry, dict) and entry.get("stat") == identity:
            digest = entry.get("sha256")
            if isinstance(digest, str):
                return digest
        digest = sha256_of(path)
        if _identity(path.stat()) != identity:
            return digest  # changed while it was read: do not remember either version
        entries.pop(key, None)
        entries[key] = {"stat": identity, "sha256": digest}
        while len(entries) > MAX_ENTRIES:
            del entries[next(iter(entries))]
        self._write(entries)
        return digest

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.debug("ignoring the digest cache %s: %s", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {}
        files = data.get("files")
        return dict(files) if isinstance(files, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        """Replace the cache file atomically (a concurrent writer's entries may be lost:
        they are hashed again next time)."""
        text = json.dumps({"version": VERSION, "files": entries}, indent=0) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".digests.", dir=self.path.parent)
        except OSError as exc:
            log.debug("cannot write the digest cache %s: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("cannot write the digest cache %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
