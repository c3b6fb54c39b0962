"""Fixtures shared by every test package: the shared data folder and a private PulseAudio."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# A checkout run without `pip install -e .` finds the package; tests/ holds helper modules.
for _path in (REPO_ROOT, REPO_ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from pulse import SHARED_DATA, PulseServer, private_pulse, pulse_missing  # noqa: E402

__all__ = ["SHARED_DATA"]


@pytest.fixture(autouse=True, scope="session")
def private_xdg_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests (and the daemons they start) never read the user's config or write the
    user's transcript journal: XDG config and state dirs point at a temp folder."""
    import os

    base = tmp_path_factory.mktemp("xdg")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    os.environ["XDG_STATE_HOME"] = str(base / "state")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` next to the repository (speech clips, parallel text)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA.resolve()}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pulse_sink() -> Iterator[PulseServer]:
    """A private PulseAudio daemon whose default sink is the null sink `cap`.

    Yields a `tests.pulse.PulseServer`: `.sink`, `.monitor`, `.play(path)`,
    `.unload_sink()`, `.load_sink()`. Skips, naming the Debian packages, when
    PulseAudio is not installed.
    """
    reason = pulse_missing()
    if reason is not None:
        pytest.skip(reason)
    with private_pulse("cap") as server:
        yield server
