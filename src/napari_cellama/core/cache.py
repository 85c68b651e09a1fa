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
    <root>/<namespace>/<pack>.sum.json            CRC-32 of keys and vectors, n, d
    <root>/<namespace>/<pack>.keys.npy            (n,) sorted 16-byte digests

A *pack* is written once and never modified: the vectors first, then its checksum
record, then the keys, each to a temporary file renamed into place (see
:mod:`napari_cellama.atomic`), and a pack counts only once its keys file exists.

Integrity (``docs/reliability.md``): before a pack is used (once per process) its
keys and vectors are checked together: readable, ``n`` keys for ``n`` vectors of the
namespace's dimension, sorted keys, and their CRC-32 equal to the record. A pack
that fails is dropped whole (keys and vectors) with a warning - its sentences are
misses and are embedded again - and compaction never merges it (it deletes it).
Vectors that are not finite are misses too. Packs written before checksums (no
``.sum.json``) get the same checks without the CRC. A cache folder that cannot be
written (read-only, a file in the way, disk full) degrades to "no cache" for writing
with one warning; the run goes on.

Only what the cache wrote is ever deleted: :meth:`EmbeddingCache.clear` removes
namespaces that are recognisably cache namespaces (``meta.json`` or packs, and
nothing but cache files), file by file, and leaves any other folder alone.

Every writer creates packs with a
unique name, so any number of processes (or Dask workers on a shared
filesystem) can write at the same time without locks; a reader that loses a
race with :meth:`EmbeddingCache.clear` or :meth:`EmbeddingCache.compact` sees
a miss, never a torn vector. Lookups are vectorised (``searchsorted`` over the
sorted digests of each pack) and read only the rows they need from
memory-mapped vector files.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import paths
from ..atomic import save_npy, write_text
from .cache_info import CacheInfo, NamespaceInfo
from .fingerprint import _KEY_DTYPE, model_fingerprint, sentence_keys  # noqa: F401  (public names of this module)

_KEYS = ".keys.npy"
_VEC = ".vec.npy"
_SUM = ".sum.json"
_META = "meta.json"
_PACK_FORMAT = 2  # 1: no checksum record; 2: <pack>.sum.json with CRC-32s
_COMPACT_PACKS = 32  # merge a namespace's packs once it has more than this many



def cache_root() -> Path:
    """Root of every napari-cellama cache (see :func:`napari_cellama.paths.cache_root`)."""
    return paths.cache_root()


def default_cache_dir() -> Path:
    """Folder of the embedding cache: ``<cache_root()>/embeddings``."""
    return paths.embeddings_dir()


class CacheWarning(UserWarning):
    """The cache was damaged or could not be written; the run went on without that part of it."""


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B")) & 0xFFFFFFFF


def _stem(keys_file: Path) -> str:
    return str(keys_file)[: -len(_KEYS)]


def _pack_files(keys_file: Path) -> list[Path]:
    """Files of one pack, keys first (a pack without keys is invisible)."""
    stem = _stem(keys_file)
    return [Path(keys_file), Path(stem + _VEC), Path(stem + _SUM)]


def is_cache_file(name: str) -> bool:
    """A file name the embedding cache writes (packs, meta, its hidden temporaries)."""
    if name.startswith("."):
        return ".tmp" in name or name.endswith(".probe")
    return name == _META or name.endswith((_KEYS, _VEC, _SUM))


def is_cache_namespace(folder: str | os.PathLike) -> bool:
    """A folder the cache wrote: ``meta.json`` or packs, and nothing but cache files."""
    d = Path(folder)
    try:
        entries = list(d.iterdir())
    except OSError:
        return False
    if not any(p.name == _META or p.name.endswith((_KEYS, _VEC)) for p in entries):
        return False
    return all(p.is_file() and not p.is_symlink() and is_cache_file(p.name) for p in entries)


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
        self._keys: dict[Path, np.ndarray | None] = {}  # keys file -> verified sorted digests (None: damaged)
        self._lock = threading.Lock()
        self.writable = True
        """False once a write failed (read-only folder, a file in the way, disk full): lookups only."""
        self.damaged: list[Path] = []
        """Packs dropped in this process because they failed their checks."""

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
        try:
            if not d.is_dir():
                return []
            return sorted(p for p in d.iterdir() if p.name.endswith(_KEYS) and not p.name.startswith("."))
        except OSError:
            return []

    # ------------------------------------------------------------------ integrity
    def _verify(self, keys_file: Path, dimension: int | None) -> np.ndarray:
        """Sorted keys of a pack whose keys and vectors pass every check, else raise ValueError."""
        stem = _stem(keys_file)
        keys = np.load(keys_file, allow_pickle=False)
        vec = np.load(stem + _VEC, mmap_mode="r", allow_pickle=False)
        if keys.dtype != _KEY_DTYPE or keys.ndim != 1:
            raise ValueError(f"keys of dtype {keys.dtype}, shape {keys.shape}")
        if vec.ndim != 2 or vec.dtype != np.float32 or vec.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for vectors of shape {vec.shape} ({vec.dtype})")
        if dimension is not None and vec.shape[1] != dimension:
            raise ValueError(f"vectors of dimension {vec.shape[1]}, the namespace has {dimension}")
        if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
            raise ValueError("keys are not sorted")
        try:
            record = json.loads(Path(stem + _SUM).read_text())
        except FileNotFoundError:
            return keys  # a pack written before checksums: structural checks only
        if not isinstance(record, dict) or record.get("n") != len(keys) or record.get("dimension") != vec.shape[1]:
            raise ValueError("checksum record does not describe this pack")
        if record.get("keys_crc32") != _crc(keys) or record.get("vec_crc32") != _crc(vec):
            raise ValueError("checksum mismatch (the files changed after they were written)")
        return keys

    def _pack_keys(self, keys_file: Path, dimension: int | None = None) -> np.ndarray | None:
        """Verified keys of a pack (memoised per process); None for a damaged pack."""
        with self._lock:
            if keys_file in self._keys:
                return self._keys[keys_file]
        try:
            keys = self._verify(keys_file, dimension)
        except FileNotFoundError:
            raise  # removed by clear()/compact() meanwhile: not damage
        except (ValueError, OSError, EOFError) as err:
            keys = None
            with self._lock:
                self.damaged.append(keys_file)
            warnings.warn(f"embedding cache: ignoring the damaged pack {keys_file.name[: -len(_KEYS)]} in "
                          f"{keys_file.parent} ({err}); its sentences are embedded again", CacheWarning,
                          stacklevel=3)
        with self._lock:
            self._keys[keys_file] = keys
        return keys

    # ------------------------------------------------------------------ read
    def lookup(self, namespace: str, sentences: Sequence[str] | None = None, *, keys: np.ndarray | None = None,
               dimension: int | None = None):
        """Cached vectors of ``sentences`` (or of precomputed ``keys``).

        Returns ``(vectors, found)``: ``vectors`` is ``(n, d)`` float32 (rows of sentences
        not found are zero), ``found`` a boolean mask. ``d`` is taken from the cache
        (or ``dimension`` when nothing is cached). Damaged packs and vectors that are not
        finite count as not found.
        """
        if keys is None:
            keys = sentence_keys(sentences or [])
        n = len(keys)
        found = np.zeros(n, dtype=bool)
        vectors = None
        meta_dim = self._dimension(namespace)
        for keys_file in self._packs(namespace):
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            try:
                pk = self._pack_keys(keys_file, meta_dim)
                if pk is None or len(pk) == 0:
                    continue
                pos = np.searchsorted(pk, keys[todo])
                pos_c = np.minimum(pos, len(pk) - 1)
                hit = pk[pos_c] == keys[todo]
                if not hit.any():
                    continue
                vec = np.load(_stem(keys_file) + _VEC, mmap_mode="r", allow_pickle=False)
                rows = pos_c[hit]
                order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
                got = np.asarray(vec[rows[order]], dtype=np.float32)
            except (FileNotFoundError, ValueError, OSError, IndexError):
                continue  # pack removed by clear()/compact() meanwhile, or unreadable: a miss
            if vectors is not None and got.shape[1] != vectors.shape[1]:
                continue
            ok = np.isfinite(got).all(axis=1)
            if vectors is None:
                vectors = np.zeros((n, got.shape[1]), dtype=np.float32)
            dst = todo[hit][order]
            vectors[dst[ok]] = got[ok]
            found[dst[ok]] = True
        if vectors is None:
            d = dimension if dimension is not None else meta_dim
            vectors = np.zeros((n, d or 0), dtype=np.float32)
        return vectors, found

    def _dimension(self, namespace: str) -> int | None:
        meta = self.meta(namespace)
        try:
            return int(meta["dimension"]) if "dimension" in meta else None
        except (TypeError, ValueError):
            return None

    def meta(self, namespace: str) -> dict:
        try:
            meta = json.loads((self._dir(namespace) / _META).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return meta if isinstance(meta, dict) else {}

    # ------------------------------------------------------------------ write
    def _write_pack(self, d: Path, stem: str, keys: np.ndarray, vectors: np.ndarray) -> Path:
        """Vectors, checksum record, keys (the pack becomes visible with its keys)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        record = {"format": _PACK_FORMAT, "n": len(keys), "dimension": int(vectors.shape[1]),
                  "keys_crc32": _crc(keys), "vec_crc32": _crc(vectors)}
        save_npy(d / (stem + _VEC), vectors)
        write_text(d / (stem + _SUM), json.dumps(record))
        keys_file = d / (stem + _KEYS)
        save_npy(keys_file, keys)
        with self._lock:
            self._keys[keys_file] = keys
        return keys_file

    @staticmethod
    def _new_stem(tag: str = "") -> str:
        return f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:12]}{tag}"

    def store(self, namespace: str, sentences: Sequence[str] | None, vectors: np.ndarray, *,
              keys: np.ndarray | None = None, meta: dict | None = None) -> Path | None:
        """Add embeddings as one new pack; returns the pack's keys file (None if nothing new).

        Sentences already in the pack are written once; rows already cached elsewhere
        are skipped. Safe to call from many processes at once. Non-finite vectors are
        refused (:class:`~napari_cellama.validators.NonFiniteEmbeddingError`). A cache
        that cannot be written warns once and is used for lookups only (returns None).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if keys is None:
            keys = sentence_keys(sentences or [])
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(keys) == 0 or not self.writable:
            return None
        from ..validators import check_finite_embeddings

        check_finite_embeddings(vectors, "the model", what="embeddings to cache")
        _, known = self.lookup(namespace, keys=keys, dimension=vectors.shape[1])
        keys, vectors = keys[~known], vectors[~known]
        if len(keys) == 0:
            return None
        uniq, first = np.unique(keys, return_index=True)  # sorted, de-duplicated
        d = self._dir(namespace)
        try:
            d.mkdir(parents=True, exist_ok=True)
            meta_file = d / _META
            if not meta_file.exists():
                info = {"dimension": int(vectors.shape[1]), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                info.update(meta or {})
                write_text(meta_file, json.dumps(info, indent=1, default=str))
            keys_file = self._write_pack(d, self._new_stem(), uniq, vectors[first])
        except OSError as err:
            self._disable(err)
            return None
        if len(self._packs(namespace)) > _COMPACT_PACKS:
            try:
                self.compact(namespace)
            except OSError as err:  # the new pack is stored; merging can wait
                warnings.warn(f"embedding cache: could not merge the packs in {d} ({err})", CacheWarning,
                              stacklevel=2)
        return keys_file

    def _disable(self, err: OSError) -> None:
        self.writable = False
        warnings.warn(f"embedding cache {self.root} cannot be written ({err.strerror or err}); "
                      "going on without storing embeddings (set NAPARI_CELLAMA_CACHE to a writable folder "
                      "or run with --no-cache)", CacheWarning, stacklevel=3)

    def compact(self, namespace: str) -> int:
        """Merge a namespace's sound packs into one and delete damaged ones; returns packs merged.

        Readers keep working meanwhile. A pack that fails its checks is never merged:
        its keys and vectors are dropped together.
        """
        packs = self._packs(namespace)
        if len(packs) < 2:
            return 0
        meta_dim = self._dimension(namespace)
        good, bad, all_keys, all_vec = [], [], [], []
        for kf in packs:
            try:
                pk = self._pack_keys(kf, meta_dim)
                if pk is None:
                    bad.append(kf)
                    continue
                vec = np.load(_stem(kf) + _VEC, allow_pickle=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            except (ValueError, OSError, EOFError):
                bad.append(kf)
                continue
            if vec.ndim != 2 or len(vec) != len(pk) or not np.isfinite(vec).all() or (
                    all_vec and vec.shape[1] != all_vec[0].shape[1]):
                bad.append(kf)
                continue
            good.append(kf)
            all_keys.append(pk)
            all_vec.append(vec)
        if len(good) >= 2:
            keys = np.concatenate(all_keys)
            vec = np.concatenate(all_vec).astype(np.float32, copy=False)
            uniq, first = np.unique(keys, return_index=True)
            self._write_pack(self._dir(namespace), self._new_stem("-merged"), uniq, vec[first])
        else:
            good = []
        for kf in good + bad:
            self._remove_pack(kf)
        return len(good)

    def _remove_pack(self, keys_file: Path) -> int:
        freed = 0
        for p in _pack_files(keys_file):  # keys first: a pack without keys is invisible
            try:
                freed += p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                pass
        with self._lock:
            self._keys.pop(keys_file, None)
        return freed

    # ------------------------------------------------------------------ manage
    def namespaces(self) -> list[str]:
        """Folders of the cache root that are cache namespaces (see :func:`is_cache_namespace`)."""
        try:
            if not self.root.is_dir():
                return []
            entries = list(self.root.iterdir())
        except OSError:
            return []
        return sorted(p.name for p in entries
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and is_cache_namespace(p))

    def foreign_entries(self) -> list[str]:
        """Names in the cache root that are not cache namespaces (left alone by :meth:`clear`)."""
        try:
            if not self.root.is_dir():
                return []
            names = set(self.namespaces())
            return sorted(p.name for p in self.root.iterdir() if p.name not in names and not p.name.startswith("."))
        except OSError:
            return []

    def info(self) -> CacheInfo:
        """Entries and bytes on disk per namespace."""
        out = []
        for ns in self.namespaces():
            d = self._dir(ns)
            entries = 0
            packs = self._packs(ns)
            meta_dim = self._dimension(ns)
            for kf in packs:
                try:
                    pk = self._pack_keys(kf, meta_dim)
                    entries += 0 if pk is None else len(pk)
                except (FileNotFoundError, ValueError, OSError):
                    pass
            size = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            out.append(NamespaceInfo(ns, entries, len(packs), size, self.meta(ns)))
        return CacheInfo(self.root, out)

    def clear(self, namespace: str | None = None) -> int:
        """Delete one namespace (or every namespace); returns the bytes freed.

        Only cache namespaces are touched, and only their cache files (packs first, then
        ``meta.json``); the folder is removed when that leaves it empty. Any other folder
        or file under the root is left alone.
        """
        names = [namespace] if namespace else self.namespaces()
        freed = 0
        for ns in names:
            d = self._dir(ns)
            if not d.is_dir() or not is_cache_namespace(d):
                continue
            for kf in self._packs(ns):
                freed += self._remove_pack(kf)
            for p in list(d.iterdir()):
                if p.is_file() and not p.is_symlink() and is_cache_file(p.name):
                    try:
                        freed += p.stat().st_size
                        p.unlink()
                    except FileNotFoundError:
                        pass
            try:
                d.rmdir()
            except OSError:
                pass  # a writer added a pack meanwhile, or something else is there: keep it
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
    "CacheWarning",
    "EmbeddingCache",
    "NamespaceInfo",
    "as_cache",
    "cache_root",
    "default_cache_dir",
    "is_cache_file",
    "is_cache_namespace",
    "model_fingerprint",
    "sentence_keys",
]
