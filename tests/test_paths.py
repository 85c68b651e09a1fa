"""One paths module: every cache folder (demo, embeddings, ONNX exports) comes from it."""

from __future__ import annotations

import pathlib

import napari_cellama
from napari_cellama import paths
from napari_cellama.core.cache import cache_root as embeddings_cache_root
from napari_cellama.core.cache import default_cache_dir
from napari_cellama.core.fast import onnx_cache_dir
from napari_cellama.datasets import cache_root as demo_cache_root


def test_demo_and_embeddings_share_one_root(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_CELLAMA_CACHE", raising=False)
    monkeypatch.delenv("NAPARI_CELLAMA_ONNX_CACHE", raising=False)
    root = paths.user_cache_dir()
    assert root.name == "napari-cellama"
    assert demo_cache_root() == embeddings_cache_root() == root
    assert paths.demo_dir().parent == default_cache_dir().parent == onnx_cache_dir().parent == root
    monkeypatch.setenv("NAPARI_CELLAMA_CACHE", str(tmp_path / "c"))
    assert paths.demo_dir() == tmp_path / "c" / "demo-v1"
    assert default_cache_dir() == tmp_path / "c" / "embeddings"
    assert onnx_cache_dir().parent == root  # exports are shared by temporary cache roots
    monkeypatch.setenv("NAPARI_CELLAMA_ONNX_CACHE", str(tmp_path / "o"))
    assert onnx_cache_dir() == tmp_path / "o"


def test_platformdirs_is_called_in_one_place_only():
    """Two calls with different ``appauthor`` put the demo and the embeddings in two folders
    on Windows; only the paths module may ask platformdirs."""
    package = pathlib.Path(napari_cellama.__file__).parent
    callers = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "platformdirs." in p.read_text(encoding="utf-8")
    )
    assert callers == ["paths.py"]


def test_no_machine_paths_in_shipped_code():
    """Shipped code takes data from the package, a parameter or the environment."""
    package = pathlib.Path(napari_cellama.__file__).parent
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if any(s in p.read_text(encoding="utf-8") for s in ('"/work/', '"/home/', '"/Users/', '"C:\\\\'))
    ]
    assert offenders == []
