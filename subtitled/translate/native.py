"""subtitled's native Mixture-of-Experts kernel: the ONNX Runtime custom op
`ai.subtitled.SparseExperts` (source `sparse_experts.c` beside this file, built at install
into `_sparse_experts*.so`, see setup.py).

It computes each token's selected experts straight from their int8/int4 blocks, reading
only those experts' weights and each of them once per call, in one graph node; models
exported with `python -m export onnx --moe-kernel native` use it. Every ONNX Runtime
session subtitled opens registers the library when it was built; a model that needs it
where it was not built gets a `ModelError` saying how to build it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from subtitled.errors import ModelError

DOMAIN = "ai.subtitled"
OP = "SparseExperts"


def library_path() -> Path | None:
    """The built kernel library, or None when the install could not build it."""
    here = Path(__file__).parent
    found = sorted(here.glob("_sparse_experts*.so")) + sorted(here.glob("_sparse_experts*.pyd"))
    return found[0] if found else None


def register(options: Any) -> bool:
    """Register the kernel with onnxruntime `options` (a SessionOptions); False when it
    was not built."""
    path = library_path()
    if path is None:
        return False
    options.register_custom_ops_library(str(path))
    return True


def missing_kernel_error(model_path: Path, error: Exception) -> ModelError | None:
    """A clear error when `error` (from ONNX Runtime loading `model_path`) is the native
    kernel missing; None for any other error."""
    text = str(error)
    if DOMAIN not in text and OP not in text:
        return None
    if library_path() is not None:
        return ModelError(f"ONNX Runtime cannot load {model_path}: {text}")
    return ModelError(
        f"{model_path} uses subtitled's native expert kernel ({DOMAIN}.{OP}), which was "
        "not built when subtitled was installed (no C compiler then?): install a C compiler "
        "(Debian: apt-get install gcc) and reinstall subtitled (pip install --force-reinstall "
        "--no-deps .), or export the model with --moe-kernel sparse"
    )
