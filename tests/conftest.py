"""Shared fixtures.

* ``demo_data``: the demo run built once per test session into a temporary cache folder
  (``make_demo(tmp)``), never the user's cache.
* ``crop_dir`` / ``full_dir``: the real Xenium bone-marrow data (read-only; tests that would
  write copy them first). Skipped when the shared data folder is absent.
* ``viewer``: a real napari viewer (napari's ``make_napari_viewer`` pytest fixture), shown so
  that multiscale levels and screenshots are rendered; run GUI tests under ``xvfb-run -a``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every cache the tests touch (embeddings, exported ONNX models, the demo) lives in a
# temporary folder for this test session, never in the user's cache; subprocesses inherit it.
os.environ.setdefault("NAPARI_CELLAMA_CACHE", tempfile.mkdtemp(prefix="cellama-test-cache-"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CROP_DIR = SHARED_DATA / "xenium_bone_marrow_crop"
FULL_DIR = SHARED_DATA / "xenium_bone_marrow"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    from napari_cellama.datasets import make_demo

    return make_demo(tmp_path_factory.mktemp("cellama-cache"))


@pytest.fixture(scope="session")
def crop_dir() -> Path:
    if not (CROP_DIR / "experiment.xenium").exists():
        pytest.skip(f"real Xenium crop not found at {CROP_DIR}")
    return CROP_DIR


@pytest.fixture(scope="session")
def full_dir() -> Path:
    if not (FULL_DIR / "experiment.xenium").exists():
        pytest.skip(f"real Xenium section not found at {FULL_DIR}")
    return FULL_DIR


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=True)


@pytest.fixture
def allocator_defaults():
    """The allocator outside any step for one test, whatever earlier tests left running (a job of
    a GUI test that ended before its worker did keeps ``retained_memory`` entered until it ends);
    the outer state is put back afterwards."""
    from napari_cellama.core import memory

    libc = memory._libc()
    with memory._lock:
        saved, memory._depth = memory._depth, 0
        if saved and libc is not None:
            memory._restore(libc)
    yield
    with memory._lock:
        if saved and memory._depth == 0 and libc is not None:
            memory._apply(libc)
        memory._depth += saved
