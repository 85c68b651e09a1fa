"""Where napari-cellama keeps files, and which paths are Xenium runs - one module for both.

Cache folders
-------------
Every cache lives under one root, :func:`cache_root`: ``$NAPARI_CELLAMA_CACHE`` if set,
else the platform user cache folder of ``napari-cellama`` (``platformdirs`` with
``appauthor=False``, so that on Windows the demo, the embeddings and the ONNX exports
share one folder instead of two author-named ones)::

    <cache_root()>/embeddings/     the embedding cache (:mod:`napari_cellama.core.cache`)
    <cache_root()>/demo-v1/        the demo run (:mod:`napari_cellama.datasets`)

ONNX exports go to ``$NAPARI_CELLAMA_ONNX_CACHE``, else ``onnx-models`` under the *user*
cache folder (not under ``$NAPARI_CELLAMA_CACHE``: an export depends only on the model
files, so temporary cache roots reuse it).

Xenium runs
-----------
:func:`xenium_root` says whether a path is a Xenium output folder or its
``experiment.xenium``. It is what the npe2 reader calls on every file napari opens, so
this module imports nothing beyond the standard library and never raises.

Nothing here imports numpy, anndata, Qt or napari.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._constants import CACHE_ENV, CACHE_SUBDIR_EMBEDDINGS, CACHE_SUBDIR_ONNX, ONNX_CACHE_ENV

APP_NAME = "napari-cellama"
"""Name of the user cache folder."""

EXPERIMENT_FILE = "experiment.xenium"
"""The file that marks a Xenium output folder."""

DEMO_NAME = "demo-v1"
"""Folder of the demo build under the cache root."""


def user_cache_dir() -> Path:
    """The platform user cache folder of napari-cellama (ignores the environment)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def cache_root() -> Path:
    """Root of every napari-cellama cache: ``$NAPARI_CELLAMA_CACHE`` or :func:`user_cache_dir`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir()


def embeddings_dir() -> Path:
    """Folder of the embedding cache: ``<cache_root()>/embeddings``."""
    return cache_root() / CACHE_SUBDIR_EMBEDDINGS


def onnx_models_dir() -> Path:
    """Folder of ONNX exports: ``$NAPARI_CELLAMA_ONNX_CACHE`` or ``<user cache>/onnx-models``."""
    env = os.environ.get(ONNX_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / CACHE_SUBDIR_ONNX


def demo_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the demo build: ``<cache_dir or cache_root()>/demo-v1``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return base / DEMO_NAME


def xenium_root(path: str | os.PathLike) -> Path | None:
    """The run folder if ``path`` is a Xenium folder or its ``experiment.xenium``, else None.

    Never raises: a path that cannot be inspected (too long, no permission, a broken link,
    an embedded NUL, not a path at all, ...) is not a Xenium run.
    """
    try:
        p = Path(os.fspath(path)).expanduser()
        if p.name == EXPERIMENT_FILE and p.is_file():
            return p.parent
        if p.is_dir() and (p / EXPERIMENT_FILE).is_file():
            return p
    except (OSError, ValueError, TypeError, RuntimeError):
        # OSError: ENAMETOOLONG, EACCES, ... ; ValueError: embedded NUL;
        # TypeError: not path-like; RuntimeError: expanduser without a home folder
        return None
    return None


__all__ = [
    "APP_NAME",
    "DEMO_NAME",
    "EXPERIMENT_FILE",
    "cache_root",
    "demo_dir",
    "embeddings_dir",
    "onnx_models_dir",
    "user_cache_dir",
    "xenium_root",
]
