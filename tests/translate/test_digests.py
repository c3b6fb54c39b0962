"""Remembered sha256 digests of model files (`subtitled.translate.digests`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from subtitled.errors import ModelError
from subtitled.translate import digests
from subtitled.translate.digests import DigestCache
from subtitled.translate.manifest import FileEntry, Manifest, load_manifest


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count full reads of a file (the real hash still runs)."""
    seen: list[Path] = []
    real = digests.sha256_of

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(digests, "sha256_of", counting)
    return seen


def test_an_unchanged_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _reads(monkeypatch)
    data = tmp_path / "weights.bin"
    data.write_bytes(b"x" * 100_000)
    cache = DigestCache(tmp_path / "cache" / "digests.json")
    expected = hashlib.sha256(b"x" * 100_000).hexdigest()
    assert cache.sha256(data) == expected
    assert DigestCache(cache.path).sha256(data) == expected  # a new process, same cache file
    assert len(reads) == 1


def test_a_file_changed_in_place_is_read_again(tmp_path: Path) -> None:
    """Same size, mtime put back: the ctime still moved, so the change is seen."""
    data = tmp_path / "weights.bin"
    data.write_bytes(b"a" * 4096)
    cache = DigestCache(tmp_path / "digests.json")
    before = cache.sha256(data)
    stat = data.stat()
    with data.open("r+b") as stream:
        stream.seek(2048)
        stream.write(b"b")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = cache.sha256(data)
    assert after != before
    assert after == hashlib.sha256(b"a" * 2048 + b"b" + b"a" * 2047).hexdigest()


def test_a_copy_or_a_replacement_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _reads(monkeypatch)
    data = tmp_path / "weights.bin"
    data.write_bytes(b"one")
    cache = DigestCache(tmp_path / "digests.json")
    cache.sha256(data)
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"two")
    os.replace(replacement, data)
    assert cache.sha256(data) == hashlib.sha256(b"two").hexdigest()
    assert len(reads) == 2


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99, "files": {}}', b"[]"])
def test_a_broken_cache_file_only_costs_a_read(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(b"payload")
    (tmp_path / "digests.json").write_bytes(content)
    cache = DigestCache(tmp_path / "digests.json")
    assert cache.sha256(data) == hashlib.sha256(b"payload").hexdigest()
    assert cache.sha256(data) == hashlib.sha256(b"payload").hexdigest()


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(b"payload")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    cache = DigestCache(blocker / "digests.json")
    assert cache.sha256(data) == hashlib.sha256(b"payload").hexdigest()


def test_loading_a_model_remembers_and_still_refuses_a_corrupt_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reads = _reads(monkeypatch)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"graph" * 1000)
    entry = FileEntry("model.onnx", 5000, hashlib.sha256(b"graph" * 1000).hexdigest())
    Manifest(name="m", architecture="gemma4_text", precision="fp32", licence="MIT",
             files=(entry,), inputs=(), outputs=(), kv_layout=()).write(model)
    load_manifest(model)
    load_manifest(model)
    assert len(reads) == 1
    assert (tmp_path / "cache" / "subtitled" / "digests.json").is_file()
    with (model / "model.onnx").open("r+b") as stream:
        stream.write(b"G")
    with pytest.raises(ModelError, match=r"model\.onnx does not match its sha256"):
        load_manifest(model)
    load_manifest(model, check_files=False)  # no read without a check
    assert len(reads) == 2
    with pytest.raises(ModelError, match=r"model\.onnx does not match its sha256"):
        load_manifest(model, remembered=False)  # a full read, past the cache
