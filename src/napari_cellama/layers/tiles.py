"""A shared in-memory tile cache under the lazy levels of the cell-label raster.

napari re-slices every visible multiscale layer when the camera moves. The cell-label raster
is stored in 4096 x 4096 chunks (``cells.zarr.zip``): reading any part of a chunk decodes all
of it (about 64 MB, 60-80 ms), napari widens its reads of a dask level to whole chunks (so the
``cells`` layer sliced, outlined and uploaded a 4096 x 4096 region for a 470-pixel view), and
the ``cell types`` and ``selected cells`` layers read the same raster again through their
lookup tables.

:class:`TiledLevel` wraps one lazy level: napari sees small chunks (:data:`TILE` pixels), and
every tile is decoded once, then kept compressed (blosc lz4, labels shrink about 100-fold) in
one :class:`TileCache` shared by every level and layer. A miss decodes the whole stored chunk
around it once and keeps all of its tiles. :func:`prefetch` reads the tiles of a region ahead
of time on a worker thread (the review queue prefetches the next cell's view).

The raster never changes (edits and recolouring change lookup tables, see
:mod:`.lookup`), so a cached tile is never stale.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

import numpy as np

TILE = 256
"""Edge (pixels) of the chunks napari sees and of the cached tiles."""

MAX_CACHE_BYTES = 256 * 2**20
"""Byte budget of the shared cache (compressed tiles; the whole bone-marrow raster needs far less)."""

_MAX_READ = 4096 * 4096
"""Pixels read at once on a miss: a stored chunk up to this size is read whole."""


def _codec():
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)


class TileCache:
    """Thread-safe LRU of compressed tiles with a byte budget (see the module docstring)."""

    def __init__(self, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._tiles: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._codec = _codec()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._tiles)

    def __contains__(self, key) -> bool:
        return key in self._tiles

    def get(self, key) -> np.ndarray | None:
        with self._lock:
            item = self._tiles.get(key)
            if item is None:
                self.misses += 1
                return None
            self._tiles.move_to_end(key)
            self.hits += 1
        blob, shape, dtype = item
        return np.frombuffer(self._codec.decode(blob), dtype=dtype).reshape(shape)

    def put(self, key, tile: np.ndarray) -> None:
        tile = np.ascontiguousarray(tile)
        blob = self._codec.encode(tile)
        with self._lock:
            old = self._tiles.pop(key, None)
            if old is not None:
                self.nbytes -= len(old[0])
            self._tiles[key] = (blob, tile.shape, tile.dtype)
            self.nbytes += len(blob)
            while self.nbytes > self.max_bytes and len(self._tiles) > 1:
                _, (b, _, _) = self._tiles.popitem(last=False)
                self.nbytes -= len(b)

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.nbytes = 0
            self.hits = self.misses = 0


SHARED_CACHE = TileCache()
"""The one cache every :class:`TiledLevel` uses unless given another."""

_TOKENS = itertools.count()


class TiledLevel:
    """A 2-D lazy array (dask / zarr) read through :class:`TileCache` in :data:`TILE` tiles.

    Exposes ``chunks = (TILE, TILE)`` so napari widens its reads to tile edges, not to the
    stored chunks. Indexing with slices (any step) or integers returns numpy arrays like the
    base; other keys are passed to the base.
    """

    def __init__(self, base, tile: int | None = None, cache: TileCache | None = None) -> None:
        if len(base.shape) != 2:
            raise ValueError(f"TiledLevel wraps 2-D arrays, got shape {tuple(base.shape)}")
        self.base = base
        self.tile = int(TILE if tile is None else tile)
        self.cache = SHARED_CACHE if cache is None else cache
        self._token = next(_TOKENS)
        self._locks: dict = {}
        self._locks_lock = threading.Lock()
        self._edges = [_stored_edges(base, axis) for axis in (0, 1)]

    # ------------------------------------------------------------------ array protocol
    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.base.shape)

    @property
    def dtype(self):
        return np.dtype(self.base.dtype)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def chunks(self) -> tuple:
        return (self.tile, self.tile)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key):
        parts = _normalise(key, self.shape)
        if parts is None:
            return np.asarray(self.base[key])
        box = [(lo, hi) for lo, hi, _ in parts]
        if any(hi <= lo for lo, hi in box):
            return np.asarray(self.base[key])  # an empty selection
        block = self.read(*box[0], *box[1])
        local = tuple(0 if step is None else slice(0, hi - lo, step) for lo, hi, step in parts)
        return block[local]

    # ------------------------------------------------------------------ tiles
    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1``, columns ``c0:c1`` assembled from cached tiles (decoded on a miss)."""
        t = self.tile
        out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)
        for ti in range(r0 // t, (r1 - 1) // t + 1):
            for tj in range(c0 // t, (c1 - 1) // t + 1):
                tile = self._tile(ti, tj)
                y0, x0 = ti * t, tj * t
                ys, ye = max(r0, y0), min(r1, y0 + tile.shape[0])
                xs, xe = max(c0, x0), min(c1, x0 + tile.shape[1])
                out[ys - r0:ye - r0, xs - c0:xe - c0] = tile[ys - y0:ye - y0, xs - x0:xe - x0]
        return out

    def prefetch(self, r0: int, r1: int, c0: int, c1: int) -> int:
        """Decode and cache the tiles over rows ``r0:r1``, columns ``c0:c1`` (clipped); returns
        how many were missing."""
        h, w = self.shape
        r0, r1, c0, c1 = max(0, r0), min(h, r1), max(0, c0), min(w, c1)
        if r1 <= r0 or c1 <= c0:
            return 0
        t = self.tile
        missing = 0
        for ti in range(r0 // t, (r1 - 1) // t + 1):
            for tj in range(c0 // t, (c1 - 1) // t + 1):
                if (self._token, ti, tj) not in self.cache:
                    missing += 1
                    self._fill(ti, tj)
        return missing

    def _tile(self, ti: int, tj: int) -> np.ndarray:
        key = (self._token, ti, tj)
        tile = self.cache.get(key)
        if tile is None:
            tile = self._fill(ti, tj)
        return tile

    def _fill(self, ti: int, tj: int) -> np.ndarray:
        """Decode the stored chunk around tile ``(ti, tj)`` once and cache all its tiles."""
        t = self.tile
        (r0, r1), (c0, c1) = (_span(self._edges[0], ti * t, t, self.shape[0]),
                              _span(self._edges[1], tj * t, t, self.shape[1]))
        with self._lock_of((r0, c0)):
            key = (self._token, ti, tj)
            if key in self.cache:  # another thread read this chunk meanwhile
                tile = self.cache.get(key)
                if tile is not None:
                    return tile
            block = np.asarray(self.base[r0:r1, c0:c1])
            wanted = None
            for i in range(r0 // t, (r1 - 1) // t + 1):
                for j in range(c0 // t, (c1 - 1) // t + 1):
                    part = block[i * t - r0:min(r1, (i + 1) * t) - r0, j * t - c0:min(c1, (j + 1) * t) - c0]
                    self.cache.put((self._token, i, j), part)
                    if (i, j) == (ti, tj):
                        wanted = np.array(part)
            return wanted

    def _lock_of(self, key) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock


def _stored_edges(base, axis: int) -> np.ndarray | None:
    """Edges of the base's stored chunks along ``axis`` (dask: explicit sizes; zarr: regular)."""
    chunks = getattr(base, "chunks", None)
    if chunks is None:
        return None
    size = int(base.shape[axis])
    c = chunks[axis]
    if isinstance(c, int | np.integer):
        return np.unique(np.r_[np.arange(0, size, int(c)), size])
    return np.r_[0, np.cumsum(np.asarray(c, dtype=np.int64))]


def _span(edges, start: int, tile: int, size: int) -> tuple[int, int]:
    """The stored chunk(s) holding the tile at ``start``, tile-aligned, at most ``_MAX_READ`` wide."""
    stop = min(size, start + tile)
    if edges is None:
        return start, stop
    k = int(np.searchsorted(edges, start, side="right")) - 1
    lo, hi = int(edges[k]), int(edges[min(k + 1, len(edges) - 1)])
    lo, hi = lo - lo % tile, min(size, -(-hi // tile) * tile)  # whole tiles
    limit = int(np.sqrt(_MAX_READ))
    if hi - lo > limit:  # a huge stored chunk: read a tile-aligned window around the tile
        lo = max(lo, start - (limit // 2 // tile) * tile)
        hi = min(hi, lo + limit)
    return lo, max(hi, stop)


def _normalise(key, shape):
    """Per axis ``(lo, hi, step or None for an integer)`` of a key of slices / integers, or None
    for keys this class passes through (arrays, negative steps, ...)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        return None
    parts = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                return None
            stop = max(start, stop)
            parts.append((start, stop, step))
        elif isinstance(k, int | np.integer):
            i = int(k) + (n if k < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis with size {n}")
            parts.append((i, i + 1, None))
        else:
            return None
    return parts


def tiled_levels(levels: list) -> list:
    """``levels`` with every lazy 2-D level (dask / zarr: anything with ``chunks``) wrapped in a
    :class:`TiledLevel`; in-memory numpy levels are kept as they are."""
    return [TiledLevel(lvl) if getattr(lvl, "chunks", None) is not None and len(lvl.shape) == 2
            and not isinstance(lvl, TiledLevel) else lvl for lvl in levels]


def tiled_base(level):
    """The :class:`TiledLevel` behind a level (itself, or the base of a lookup over it), or None."""
    seen = 0
    while level is not None and seen < 4:
        if isinstance(level, TiledLevel):
            return level
        level = getattr(level, "base", None)
        seen += 1
    return None


_EXECUTOR = None


def prefetch(jobs: list, wait: bool = False):
    """Read ``[(TiledLevel, (r0, r1, c0, c1)), ...]`` into the cache on a worker thread
    (one thread, so prefetches queue up behind each other); returns the future."""
    global _EXECUTOR
    from concurrent.futures import ThreadPoolExecutor

    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cellama-prefetch")

    def work():
        return sum(level.prefetch(*box) for level, box in jobs)

    future = _EXECUTOR.submit(work)
    if wait:
        future.result()
    return future


def view_jobs(layers, center, half) -> list:
    """Prefetch jobs for a view of half-size ``half`` (world units, per displayed axis) around
    ``center`` (world ``(y, x)``): for each visible layer drawn from a :class:`TiledLevel` (also
    through a lookup table), the tiles at its current level; each raster once."""
    jobs, seen = [], set()
    for layer in layers:
        if not layer.visible or getattr(layer, "ndim", 0) != 2:
            continue
        multiscale = getattr(layer, "multiscale", False)
        level = int(getattr(layer, "data_level", 0)) if multiscale else 0
        base = tiled_base(layer.data[level] if multiscale else layer.data)
        if base is None or id(base) in seen:
            continue
        seen.add(id(base))
        corners = np.array([[center[0] - half[0], center[1] - half[1]],
                            [center[0] + half[0], center[1] + half[1]]], dtype=np.float64)
        data = np.array([layer.world_to_data(c) for c in corners], dtype=np.float64)
        if multiscale:
            data = data / np.asarray(layer.downsample_factors[level], dtype=np.float64)[-2:]
        lo = np.floor(data.min(axis=0)).astype(int)
        hi = np.ceil(data.max(axis=0)).astype(int) + 1
        jobs.append((base, (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]))))
    return jobs
