"""Content-addressed persistent cache of sentence embeddings.

An embedding is stored under the key ``(namespace, sentence)``, where the
namespace names *what computed it*: the model fingerprint (a hash of the model
folder's weight, config and tokenizer files, see :func:`model_fingerprint`; not
its path, so a changed model never reuses stale vectors) and the embedding mode
(``exact`` or ``fast``; their vectors differ). The sentence enters as a 128-bit
BLAKE2b digest of its UTF-8 text.

Layout on disk (``<root>`` is :func:`default_cache_dir`)::

    <root>/<namespace>/meta.json                  model id, mode, dimension
    <root>/<namespace>/<pack>.vec.npy             (n, d) float32 vectors
    <root>/<namespace>/<pack>.keys.npy            (n,) sorted 16-byte digests

A *pack* is written once and never modified: the vectors first, then the keys,
each to a temporary file renamed into place (``os.replace`` is atomic), and a
pack counts only once its keys file exists. Every writer creates packs with a
unique name, so any number of processes (or Dask workers on a shared
filesystem) can write at the same time without locks; a reader that loses a
race with :meth:`EmbeddingCache.clear` or :meth:`EmbeddingCache.compact` sees
a miss, never a torn vector. Lookups are vectorised (``searchsorted`` over the
sorted digests of each pack) and read only the rows they need from
memory-mapped vector files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .. import paths

_KEY_DTYPE = np.dtype("S16")
_KEYS = ".keys.npy"
_VEC = ".vec.npy"
_META = "meta.json"
_COMPACT_PACKS = 32  # merge a namespace's packs once it has more than this many

# files of a model folder that decide its output (weights, configs, tokenizer)
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".pt", ".onnx")
_FINGERPRINT_SKIP = ("readme", "license", ".git", "data_config.json", "train_script", "eval")


def cache_root() -> Path:
    """Root of every napari-cellama cache (see :func:`napari_cellama.paths.cache_root`)."""
    return paths.cache_root()


def default_cache_dir() -> Path:
    """Folder of the embedding cache: ``<cache_root()>/embeddings``."""
    return paths.embeddings_dir()


def sentence_keys(sentences: Iterable[str]) -> np.ndarray:
    """128-bit BLAKE2b digest of each sentence's UTF-8 text, as an ``S16`` array."""
    blake = hashlib.blake2b
    return np.array([blake(s.encode("utf-8"), digest_size=16).digest() for s in sentences], dtype=_KEY_DTYPE)


_FP_MEMO: dict[tuple, str] = {}
_FP_LOCK = threading.Lock()


def _fingerprint_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix().lower()
        if not p.is_file() or any(part in rel for part in _FINGERPRINT_SKIP):
            continue
        if rel.endswith(_FINGERPRINT_SUFFIXES):
            files.append(p)
    return files


def model_fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 (hex, 16 characters) over the relative names and bytes of a model folder's
    weight, config and tokenizer files.

    Two copies of the same model in different places share a fingerprint; a model whose
    weights or tokenizer changed gets a new one. The hash is memoised per process on the
    files' sizes and modification times.
    """
    folder = Path(folder).resolve()
    files = _fingerprint_files(folder)
    if not files:
        raise FileNotFoundError(f"no model files in {folder}")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _FP_LOCK:
        if stamp in _FP_MEMO:
            return _FP_MEMO[stamp]
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    digest = h.hexdigest()[:16]
    with _FP_LOCK:
        _FP_MEMO[stamp] = digest
    return digest


def _atomic_save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@dataclass
class NamespaceInfo:
    """Size of one namespace (one model fingerprint and mode) of the cache."""

    name: str
    entries: int
    packs: int
    bytes: int
    meta: dict = field(default_factory=dict)


@dataclass
class CacheInfo:
    """Size report of an :class:`EmbeddingCache`."""

    root: Path
    namespaces: list[NamespaceInfo]

    @property
    def entries(self) -> int:
        return sum(n.entries for n in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.namespaces)

    def summary(self) -> str:
        lines = [f"embedding cache {self.root}: {self.entries} embeddings, {_human(self.bytes)}"]
        for n in self.namespaces:
            what = ", ".join(f"{k} {v}" for k, v in n.meta.items() if k in ("model", "mode", "dimension"))
            lines.append(f"  {n.name}: {n.entries} embeddings in {n.packs} pack(s), {_human(n.bytes)}"
                         + (f" ({what})" if what else ""))
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class EmbeddingCache:
    """Persistent, content-addressed store of float32 sentence embeddings.

    Parameters
    ----------
    root
        cache folder; default :func:`default_cache_dir` (``$NAPARI_CELLAMA_CACHE/embeddings``
        or the platform user cache ``napari-cellama/embeddings``).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self._keys: dict[Path, np.ndarray] = {}  # keys file -> its sorted digests (immutable)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    def __reduce__(self):  # picklable for Dask workers: only the folder travels
        return (EmbeddingCache, (str(self.root),))

    # ------------------------------------------------------------------ paths
    @staticmethod
    def namespace(fingerprint: str, mode: str) -> str:
        """Name of the folder holding embeddings of model ``fingerprint`` in ``mode``."""
        return f"{fingerprint}-{mode}"

    def _dir(self, namespace: str) -> Path:
        if not namespace or "/" in namespace or "\\" in namespace or namespace.startswith("."):
            raise ValueError(f"bad cache namespace {namespace!r}")
        return self.root / namespace

    def _packs(self, namespace: str) -> list[Path]:
        d = self._dir(namespace)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.name.endswith(_KEYS) and not p.name.startswith("."))

    def _pack_keys(self, keys_file: Path) -> np.ndarray:
        with self._lock:
            if keys_file in self._keys:
                return self._keys[keys_file]
        k = np.load(keys_file, allow_pickle=False)
        with self._lock:
            self._keys[keys_file] = k
        return k

    # ------------------------------------------------------------------ read
    def lookup(self, namespace: str, sentences: Sequence[str] | None = None, *, keys: np.ndarray | None = None,
               dimension: int | None = None):
        """Cached vectors of ``sentences`` (or of precomputed ``keys``).

        Returns ``(vectors, found)``: ``vectors`` is ``(n, d)`` float32 (rows of sentences
        not found are zero), ``found`` a boolean mask. ``d`` is taken from the cache
        (or ``dimension`` when nothing is cached).
        """
        if keys is None:
            keys = sentence_keys(sentences or [])
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        vectors = None
        for keys_file in self._packs(namespace):
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            try:
                pk = self._pack_keys(keys_file)
                if len(pk) == 0:
                    continue
                pos = np.searchsorted(pk, keys[todo])
                pos_c = np.minimum(pos, len(pk) - 1)
                hit = pk[pos_c] == keys[todo]
                if not hit.any():
                    continue
                vec = np.load(str(keys_file)[: -len(_KEYS)] + _VEC, mmap_mode="r", allow_pickle=False)
                rows = pos_c[hit]
                order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
                got = np.asarray(vec[rows[order]], dtype=np.float32)
            except (FileNotFoundError, ValueError, OSError):
                continue  # pack removed by clear()/compact() meanwhile, or unreadable: a miss
            if vectors is None:
                vectors = np.zeros((n, got.shape[1]), dtype=np.float32)
            dst = todo[hit][order]
            vectors[dst] = got
            found[dst] = True
        if vectors is None:
            d = dimension if dimension is not None else self._dimension(namespace)
            vectors = np.zeros((n, d or 0), dtype=np.float32)
        return vectors, found

    def _dimension(self, namespace: str) -> int | None:
        meta = self.meta(namespace)
        return int(meta["dimension"]) if "dimension" in meta else None

    def meta(self, namespace: str) -> dict:
        try:
            return json.loads((self._dir(namespace) / _META).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    # ------------------------------------------------------------------ write
    def store(self, namespace: str, sentences: Sequence[str] | None, vectors: np.ndarray, *,
              keys: np.ndarray | None = None, meta: dict | None = None) -> Path | None:
        """Add embeddings as one new pack; returns the pack's keys file (None if nothing new).

        Sentences already in the pack are written once; rows already cached elsewhere
        are skipped. Safe to call from many processes at once.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if keys is None:
            keys = sentence_keys(sentences or [])
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(keys) == 0:
            return None
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to cache non-finite embeddings")
        _, known = self.lookup(namespace, keys=keys, dimension=vectors.shape[1])
        keys, vectors = keys[~known], vectors[~known]
        if len(keys) == 0:
            return None
        uniq, first = np.unique(keys, return_index=True)  # sorted, de-duplicated
        d = self._dir(namespace)
        d.mkdir(parents=True, exist_ok=True)
        meta_file = d / _META
        if not meta_file.exists():
            info = {"dimension": int(vectors.shape[1]), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            info.update(meta or {})
            _atomic_write_text(meta_file, json.dumps(info, indent=1, default=str))
        stem = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        _atomic_save(d / (stem + _VEC), np.ascontiguousarray(vectors[first]))
        keys_file = d / (stem + _KEYS)
        _atomic_save(keys_file, uniq)  # the pack becomes visible here
        if len(self._packs(namespace)) > _COMPACT_PACKS:
            self.compact(namespace)
        return keys_file

    def compact(self, namespace: str) -> int:
        """Merge a namespace's packs into one (readers keep working meanwhile); returns packs merged."""
        packs = self._packs(namespace)
        if len(packs) < 2:
            return 0
        all_keys, all_vec = [], []
        for kf in packs:
            try:
                all_keys.append(np.load(kf, allow_pickle=False))
                all_vec.append(np.load(str(kf)[: -len(_KEYS)] + _VEC, allow_pickle=False))
            except (FileNotFoundError, ValueError, OSError):
                continue
        if not all_keys:
            return 0
        keys = np.concatenate(all_keys)
        vec = np.concatenate(all_vec).astype(np.float32, copy=False)
        uniq, first = np.unique(keys, return_index=True)
        d = self._dir(namespace)
        stem = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:12]}-merged"
        _atomic_save(d / (stem + _VEC), np.ascontiguousarray(vec[first]))
        _atomic_save(d / (stem + _KEYS), uniq)
        for kf in packs:  # keys first: a pack without keys is invisible
            for p in (kf, Path(str(kf)[: -len(_KEYS)] + _VEC)):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            with self._lock:
                self._keys.pop(kf, None)
        return len(packs)

    # ------------------------------------------------------------------ manage
    def namespaces(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def info(self) -> CacheInfo:
        """Entries and bytes on disk per namespace."""
        out = []
        for ns in self.namespaces():
            d = self._dir(ns)
            entries = 0
            packs = self._packs(ns)
            for kf in packs:
                try:
                    entries += len(self._pack_keys(kf))
                except (FileNotFoundError, ValueError, OSError):
                    pass
            size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            out.append(NamespaceInfo(ns, entries, len(packs), size, self.meta(ns)))
        return CacheInfo(self.root, out)

    def clear(self, namespace: str | None = None) -> int:
        """Delete one namespace (or everything); returns the bytes freed."""
        names = [namespace] if namespace else self.namespaces()
        freed = 0
        for ns in names:
            d = self._dir(ns)
            if not d.is_dir():
                continue
            packs = self._packs(ns)
            for kf in packs:  # make packs invisible first, then remove the rest
                try:
                    freed += kf.stat().st_size
                    kf.unlink()
                except FileNotFoundError:
                    pass
            freed += sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            shutil.rmtree(d, ignore_errors=True)
        with self._lock:
            self._keys.clear()
        return freed


def as_cache(cache) -> EmbeddingCache | None:
    """``None``/``False`` -> no cache; ``True`` -> the default cache; a path -> a cache there."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return EmbeddingCache()
    if isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be a bool, a folder or an EmbeddingCache, not {type(cache).__name__}")


__all__ = [
    "CacheInfo",
    "EmbeddingCache",
    "NamespaceInfo",
    "as_cache",
    "cache_root",
    "default_cache_dir",
    "model_fingerprint",
    "sentence_keys",
]
