"""A tiny random-weight translation model (Gemma 4 shape: sliding and full layers, K=V),
exported once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "export")]

pytest.importorskip("torch", reason="the test model is exported with the `export` extra")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export_configs import tiny_gemma4
    from fixture_model import make_model

    return make_model(tiny_gemma4(), tmp_path_factory.mktemp("tiny_translation"))
