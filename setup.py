"""Builds subtitled's native expert kernel (subtitled/translate/sparse_experts.c), an ONNX
Runtime custom-op library, at install; everything else is in pyproject.toml.

The library does not link against onnxruntime or Python: ONNX Runtime loads it by path
(subtitled.translate.native). It is optional: without a C compiler the install goes on
without it, and only models exported with `--moe-kernel native` then refuse to load, with
an error that says so. Compiled for the installing machine's CPU (-march=native) when the
compiler takes that, else for the baseline of its architecture.
"""

from __future__ import annotations

from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class NativeBuild(build_ext):
    def build_extension(self, ext: Any) -> None:
        base = ["-O3", "-std=c11", "-fvisibility=hidden"]
        if self.compiler.compiler_type == "unix":
            try:
                ext.extra_compile_args = [*base, "-march=native"]
                super().build_extension(ext)
                return
            except Exception as error:  # the compiler may not know -march=native
                print(f"subtitled: building {ext.name} with -march=native failed ({error}); "
                      "retrying without")
            ext.extra_compile_args = base
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "subtitled.translate._sparse_experts",
            ["subtitled/translate/sparse_experts.c"],
            libraries=["m"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": NativeBuild},
)
