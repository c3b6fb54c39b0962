"""Manifest parsing: good files, and errors that name the file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from subtitled.errors import ConfigError
from subtitled.tools.bench.manifest import add_references, read_manifest, select

HEADER = "path\tduration_s\tspeaker\tsource\tlicense\ttranscript"


def write(folder: Path, text: str, name: str = "manifest.tsv") -> Path:
    (folder / "clips").mkdir(exist_ok=True)
    for clip in ("a.flac", "b.flac"):
        (folder / "clips" / clip).write_bytes(b"")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_items_relative_to_the_manifest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"{HEADER}\tref_de\n"
        'clips/a.flac\t1.5\tS1\tsrc\tPD\tThe "forty-two" line\tDie Zeile\n'
        "\n"  # blank lines are ignored
        "clips/b.flac\t2\tS2\tsrc\tPD\tHello.\t\n",
    )
    items = read_manifest(path)
    assert [i.name for i in items] == ["clips/a.flac", "clips/b.flac"]
    assert items[0].path == (tmp_path / "clips" / "a.flac").resolve()
    assert items[0].duration_s == 1.5
    assert items[0].transcript == 'The "forty-two" line'  # quotes are plain characters
    assert items[0].speaker == "S1"
    assert items[0].references == {"de": "Die Zeile"}
    assert items[1].references == {}  # an empty reference is no reference


def test_minimal_columns_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path, "transcript\tpath\tduration_s\nhi there\tclips/a.flac\t0.5\n")
    (item,) = read_manifest(path)
    assert (item.name, item.duration_s, item.transcript, item.speaker) == (
        "clips/a.flac", 0.5, "hi there", ""
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"manifest\.tsv: empty file"),
        (f"{HEADER}\n", r"manifest\.tsv: no items"),
        ("path\tduration_s\nclips/a.flac\t1\n", r"manifest\.tsv:1: missing column 'transcript'"),
        (f"{HEADER}\tnotes\n", r"manifest\.tsv:1: unknown column 'notes'"),
        ("path\tpath\tduration_s\ttranscript\n", r"manifest\.tsv:1: column 'path' appears twice"),
        (
            f"{HEADER}\nclips/a.flac\t1\tS\ts\tl\tok\nclips/b.flac\t1\tS\ts\tl\n",
            r"manifest\.tsv:3: 5 tab-separated fields, but the header has 6 columns",
        ),
        (
            f"{HEADER}\nclips/a.flac\tlong\tS\ts\tl\thi\n",
            r"manifest\.tsv:2: column 'duration_s': 'long' is not a number",
        ),
        (
            f"{HEADER}\nclips/a.flac\t-1\tS\ts\tl\thi\n",
            r"manifest\.tsv:2: column 'duration_s': '-1' must be positive",
        ),
        (
            f"{HEADER}\nclips/a.flac\tnan\tS\ts\tl\thi\n",
            r"manifest\.tsv:2: column 'duration_s': 'nan' must be positive",
        ),
        (
            f"{HEADER}\nclips/missing.flac\t1\tS\ts\tl\thi\n",
            r"manifest\.tsv:2: column 'path': no such file .*missing\.flac",
        ),
        (f"{HEADER}\n \t1\tS\ts\tl\thi\n", r"manifest\.tsv:2: column 'path' is empty"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        read_manifest(path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.tsv: no such file"):
        read_manifest(tmp_path / "nope.tsv")


def test_references_file_merges_by_path(tmp_path: Path) -> None:
    manifest = write(tmp_path, f"{HEADER}\tref_de\nclips/a.flac\t1\tS\ts\tl\thi\thallo\n"
                               "clips/b.flac\t1\tS\ts\tl\tbye\t\n")
    refs = write(tmp_path, "path\tref_es\tref_de\nclips/b.flac\tadiós\ttschüss\n", "refs.tsv")
    items = add_references(read_manifest(manifest), refs)
    assert items[0].references == {"de": "hallo"}
    assert items[1].references == {"es": "adiós", "de": "tschüss"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ref_de\nhallo\n", r"refs\.tsv:1: missing column 'path'"),
        ("path\tlang\n", r"refs\.tsv:1: unknown column 'lang'"),
        ("path\n", r"refs\.tsv:1: no reference columns"),
        ("path\tref_de\nclips/zzz.flac\thallo\n", r"refs\.tsv:2: .*'clips/zzz\.flac' is not in"),
    ],
)
def test_references_file_errors(tmp_path: Path, text: str, message: str) -> None:
    manifest = write(tmp_path, f"{HEADER}\nclips/a.flac\t1\tS\ts\tl\thi\n")
    refs = write(tmp_path, text, "refs.tsv")
    with pytest.raises(ConfigError, match=message):
        add_references(read_manifest(manifest), refs)


def test_select_filters_then_limits(tmp_path: Path) -> None:
    items = read_manifest(write(
        tmp_path, f"{HEADER}\nclips/a.flac\t1\tS\ts\tl\thi\nclips/b.flac\t1\tS\ts\tl\tyo\n"
    ))
    assert [i.name for i in select(items, contains=["b."])] == ["clips/b.flac"]
    assert len(select(items, contains=["a.", "b."])) == 2
    assert [i.name for i in select(items, limit=1)] == ["clips/a.flac"]
    assert len(select(items)) == 2
    with pytest.raises(ConfigError, match="no manifest item's path contains 'zzz'"):
        select(items, contains=["zzz"])
    with pytest.raises(ConfigError, match="--limit 0"):
        select(items, limit=0)


def test_the_shared_manifest_parses(shared_data: Path) -> None:
    items = read_manifest(shared_data / "speech" / "manifest.tsv")
    assert len(items) >= 200
    assert all(i.path.is_file() and i.transcript for i in items)
    assert len(select(items, contains=["ljspeech"])) == 186
    assert len(select(items, contains=["librispeech", "misc"])) == len(items) - 186
