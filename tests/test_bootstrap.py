"""What `bootstrap.sh` shows a newcomer: the editable install of subtitled is quiet."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def editable_build(project: Path, out: Path, warnings: str | None) -> str:
    """Build subtitled's editable wheel with setuptools, as pip does; its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    if warnings is not None:
        env["PYTHONWARNINGS"] = warnings
    done = subprocess.run(
        [sys.executable, "-c",
         f"from setuptools import build_meta; build_meta.build_editable({str(out)!r})"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_editable_install_prints_no_setuptools_warning_box(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    line = next(line for line in (REPO_ROOT / "bootstrap.sh").read_text().splitlines()
                if "pip install -q -e" in line)
    match = re.match(r'PYTHONWARNINGS="([^"]+)" ', line)
    assert match, f"bootstrap.sh installs subtitled without quieting setuptools: {line}"
    project = tmp_path / "subtitled-copy"  # the build writes its extension in place
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(REPO_ROOT / "subtitled", project / "subtitled",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    loud = editable_build(project, tmp_path / "loud", None)
    assert "Please be careful with folders" in loud  # what setuptools says by default
    quiet = editable_build(project, tmp_path / "quiet", match.group(1))
    assert "*****" not in quiet and "Editable installation" not in quiet, quiet
