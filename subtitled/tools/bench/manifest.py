"""The benchmark manifest: a TSV of audio clips with reference transcripts.

    path    duration_s  speaker  source  license  transcript  [ref_de  ref_es ...]

The first line names the columns (any order). `path`, `duration_s` and `transcript` are
required; `speaker`, `source` and `license` are kept when present; a column `ref_LANG`
holds the reference translation into LANG (e.g. `ref_de`). Paths are relative to the
manifest's folder. Fields are tab-separated, unquoted (a `"` is an ordinary character).

A separate references file (`--refs`) has the same format with `path` and `ref_LANG`
columns only; it adds reference translations to the manifest items with the same path.

Every problem is a `ConfigError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from subtitled.errors import ConfigError

REQUIRED = ("path", "duration_s", "transcript")
OPTIONAL = ("speaker", "source", "license")
_REF_COLUMN = re.compile(r"^ref_([a-z]{2,3}(?:-[A-Za-z0-9]+)?)$")


@dataclass(frozen=True)
class ManifestItem:
    """One clip: where it is, how long, what was said, and reference translations."""

    path: Path
    """Absolute (resolved against the manifest's folder)."""
    name: str
    """The path as written in the manifest: the item's name in reports."""
    duration_s: float
    transcript: str
    speaker: str = ""
    source: str = ""
    license: str = ""
    references: Mapping[str, str] = field(default_factory=dict)
    """Reference translations by target language code."""


def read_manifest(path: Path) -> list[ManifestItem]:
    """Parse and check a manifest; every audio file it names must exist."""
    rows = _read_tsv(path)
    header_line, header = rows[0]
    for column in REQUIRED:
        if column not in header:
            raise ConfigError(
                f"{path}:{header_line}: missing column {column!r} "
                f"(required: {', '.join(REQUIRED)}; found: {', '.join(header)})"
            )
    ref_columns = _ref_columns(path, rows[0], allowed=(*REQUIRED, *OPTIONAL))
    items: list[ManifestItem] = []
    for line, fields in rows[1:]:
        values = dict(zip(header, fields, strict=True))
        name = values["path"].strip()
        if not name:
            raise ConfigError(f"{path}:{line}: column 'path' is empty")
        audio = (path.parent / name).resolve()
        if not audio.is_file():
            raise ConfigError(f"{path}:{line}: column 'path': no such file {audio}")
        items.append(
            ManifestItem(
                path=audio,
                name=name,
                duration_s=_duration(path, line, values["duration_s"]),
                transcript=values["transcript"].strip(),
                speaker=values.get("speaker", "").strip(),
                source=values.get("source", "").strip(),
                license=values.get("license", "").strip(),
                references={
                    lang: values[column].strip()
                    for column, lang in ref_columns.items()
                    if values[column].strip()
                },
            )
        )
    if not items:
        raise ConfigError(f"{path}: no items (only a header line)")
    return items


def add_references(items: Sequence[ManifestItem], refs_path: Path) -> list[ManifestItem]:
    """Merge reference translations from a `path`/`ref_LANG` TSV into `items` (by path)."""
    rows = _read_tsv(refs_path)
    header_line, header = rows[0]
    if "path" not in header:
        raise ConfigError(
            f"{refs_path}:{header_line}: missing column 'path' (found: {', '.join(header)})"
        )
    ref_columns = _ref_columns(refs_path, rows[0], allowed=("path",))
    if not ref_columns:
        raise ConfigError(
            f"{refs_path}:{header_line}: no reference columns (name them ref_LANG, e.g. ref_de)"
        )
    by_name = {item.name: i for i, item in enumerate(items)}
    merged = list(items)
    for line, fields in rows[1:]:
        values = dict(zip(header, fields, strict=True))
        name = values["path"].strip()
        if name not in by_name:
            raise ConfigError(f"{refs_path}:{line}: column 'path': {name!r} is not in the manifest")
        i = by_name[name]
        references = dict(merged[i].references)
        references.update(
            {lang: values[c].strip() for c, lang in ref_columns.items() if values[c].strip()}
        )
        merged[i] = replace(merged[i], references=references)
    return merged


def select(
    items: Sequence[ManifestItem],
    *,
    contains: Sequence[str] = (),
    limit: int | None = None,
) -> list[ManifestItem]:
    """Items whose manifest path contains any of `contains` (all items if it is empty),
    then the first `limit` of them."""
    chosen = [i for i in items if not contains or any(c in i.name for c in contains)]
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit {limit}: must be at least 1")
        chosen = chosen[:limit]
    if not chosen:
        wanted = " or ".join(repr(c) for c in contains)
        raise ConfigError(f"no manifest item's path contains {wanted}")
    return chosen


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line, the header first, widths checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"manifest {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from exc
    reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = [(n, row) for n, row in enumerate(reader, start=1) if any(f.strip() for f in row)]
    if not rows:
        raise ConfigError(f"{path}: empty file (expected a header line naming the columns)")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for column in header:
        if not column:
            raise ConfigError(f"{path}:{header_line}: a column has no name")
        if column in seen:
            raise ConfigError(f"{path}:{header_line}: column {column!r} appears twice")
        seen.add(column)
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            raise ConfigError(
                f"{path}:{line}: {len(fields)} tab-separated fields, but the header has "
                f"{len(header)} columns ({', '.join(header)})"
            )
    return [(header_line, header), *rows[1:]]


def _ref_columns(
    path: Path, header_row: tuple[int, Sequence[str]], allowed: Sequence[str]
) -> dict[str, str]:
    """Map each `ref_LANG` column to LANG; any other unknown column is an error."""
    line, header = header_row
    refs: dict[str, str] = {}
    for column in header:
        match = _REF_COLUMN.match(column)
        if match:
            refs[column] = match.group(1)
        elif column not in allowed:
            raise ConfigError(
                f"{path}:{line}: unknown column {column!r}; allowed: {', '.join(allowed)} "
                "and ref_LANG (a reference translation, e.g. ref_de)"
            )
    return refs


def _duration(path: Path, line: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigError(
            f"{path}:{line}: column 'duration_s': {text!r} is not a number of seconds"
        ) from exc
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{path}:{line}: column 'duration_s': {text!r} must be positive")
    return value
