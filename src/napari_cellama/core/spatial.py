"""Spatial neighbours of cells, and the cell-type composition of each neighbourhood.

Computed on cell centroids in microns (``obsm['spatial']``) with a
:class:`scipy.spatial.cKDTree` queried on all cores (``workers=-1``):

* ``k`` nearest cells (default :data:`~napari_cellama._constants.DEFAULT_SPATIAL_NEIGHBORS`), or
* every cell whose centroid lies within ``radius`` microns (distance <= radius).

The cell itself is never its own neighbour (a different cell at the very same
position is). Neighbours are ordered nearest first; the order of cells at exactly
equal distance is unspecified. A cell's composition is the fraction of each cell type
among its neighbours (rows sum to 1; cells without neighbours are all zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._constants import (
    DEFAULT_SPATIAL_CHUNK,
    DEFAULT_SPATIAL_NEIGHBORS,
)
from ..validators import (
    CellamaInputError,
    check_neighborhood,
)

# --------------------------------------------------------------------------- neighbours


@dataclass
class SpatialNeighbors:
    """Ragged (CSR-style) spatial neighbour lists, nearest first.

    The neighbours of query cell ``i`` are ``indices[indptr[i]:indptr[i + 1]]``
    (row positions of all cells) at ``distances[...]`` microns.
    """

    indptr: np.ndarray
    indices: np.ndarray
    distances: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Neighbours per query cell."""
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, distances)`` of query cell ``i``."""
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.distances[a:b]


def _ragged(mask: np.ndarray, idx: np.ndarray, dist: np.ndarray):
    counts = mask.sum(axis=1)
    return counts, idx[mask].astype(np.int64), dist[mask].astype(np.float64)


def spatial_neighbors(
    coords,
    k: int | None = None,
    radius: float | None = None,
    *,
    query: np.ndarray | None = None,
    chunk: int = DEFAULT_SPATIAL_CHUNK,
) -> SpatialNeighbors:
    """Spatial neighbours of cells on their centroids (microns), nearest first.

    Parameters
    ----------
    coords
        (n, 2) centroids of all cells (the cells that can be neighbours).
    k, radius
        ``k`` nearest cells, or all cells within ``radius`` microns (inclusive);
        at most one of them; neither means ``k=DEFAULT_SPATIAL_NEIGHBORS``. ``k``
        is capped at ``n - 1``.
    query
        row positions of the cells whose neighbours are wanted (default: all).
    chunk
        query rows per tree query in radius mode (bounds memory).

    The cell itself is excluded. The tree is queried on all cores
    (``workers=-1``); there is no Python loop per cell.
    """
    from scipy.spatial import cKDTree

    k, radius = check_neighborhood(k, radius, DEFAULT_SPATIAL_NEIGHBORS)
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2:
        raise CellamaInputError(f"centroids must be a cells x 2 array, got shape {xy.shape}")
    n = xy.shape[0]
    query = np.arange(n, dtype=np.int64) if query is None else np.asarray(query, dtype=np.int64).ravel()
    m = len(query)
    if m == 0 or n < 2:
        return SpatialNeighbors(np.zeros(m + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    tree = cKDTree(xy)
    q = xy[query]
    if k is not None:
        k = min(k, n - 1)
        dist, idx = tree.query(q, k=k + 1, workers=-1)
        dist, idx = dist.reshape(m, k + 1), idx.reshape(m, k + 1)
        drop = idx == query[:, None]
        no_self = ~drop.any(axis=1)  # >k+1 cells share the position: drop the farthest instead
        drop[no_self, -1] = True
        counts, indices, distances = _ragged(~drop, idx, dist)
    else:
        # exact count within the radius first (includes the cell itself), then one
        # k-query per chunk with k = the chunk's largest count (+1 for float ties)
        within = np.asarray(tree.query_ball_point(q, radius, return_length=True, workers=-1), dtype=np.int64)
        bound = np.nextafter(radius, np.inf)
        counts = np.zeros(m, dtype=np.int64)
        parts_i, parts_d = [], []
        for start in range(0, m, chunk):
            stop = min(start + chunk, m)
            kmax = int(min(within[start:stop].max() + 1, n))
            dist, idx = tree.query(q[start:stop], k=kmax, distance_upper_bound=bound, workers=-1)
            dist, idx = dist.reshape(stop - start, kmax), idx.reshape(stop - start, kmax)
            keep = (idx < n) & (dist <= radius) & (idx != query[start:stop, None])
            c, i_, d_ = _ragged(keep, idx, dist)
            counts[start:stop] = c
            parts_i.append(i_)
            parts_d.append(d_)
        indices, distances = np.concatenate(parts_i), np.concatenate(parts_d)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return SpatialNeighbors(indptr, indices, distances)



def neighbor_composition(neighbors: SpatialNeighbors, codes: np.ndarray, n_types: int) -> sp.csr_matrix:
    """Per query cell, the fraction of each type (code of every cell: ``codes``) among its neighbours.

    Rows of cells without neighbours are all zero; other rows sum to 1.
    """
    counts = neighbors.counts
    rows = np.repeat(np.arange(len(counts)), counts)
    w = 1.0 / counts[rows]
    return sp.csr_matrix(
        (w, (rows, np.asarray(codes)[neighbors.indices])), shape=(len(counts), n_types), dtype=np.float64
    )



__all__ = ["SpatialNeighbors", "neighbor_composition", "spatial_neighbors"]
