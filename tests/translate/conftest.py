"""A tiny random-weight translation model (Gemma 4 shape: sliding and full layers, K=V),
exported once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "export")]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="the test model is exported with the `export` extra")
    from fixture_model import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_append_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model exported with `--kv-cache append` (as every model was before shared
    cache buffers): the runtime's append path for sliding GroupQueryAttention layers."""
    pytest.importorskip("torch", reason="the test model is exported with the `export` extra")
    from fixture_model import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp(), kv_cache="append")
