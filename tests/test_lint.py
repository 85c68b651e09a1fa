"""The code passes the project's ruff rule set (``[tool.ruff.lint]`` in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401
    except ImportError:
        exe = shutil.which("ruff")
        if exe is None:
            pytest.skip("ruff is not installed (pip install -e .[testing])")
        return [exe]
    return [sys.executable, "-m", "ruff"]


def test_ruff_passes():
    out = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--output-format", "concise", "src", "tests", "benchmarks", "docs", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
