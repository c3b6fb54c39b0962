"""A tiny random-weight translation model (Gemma 4 shape: sliding and full layers, K=V),
exported once per test session (shared with tests/translate)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[2]
sys.path[:0] = [str(TESTS / "translate"), str(TESTS / "export")]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the test model is exported with the `export` extra")
    from fixture_model import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp())
