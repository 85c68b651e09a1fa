"""The UMAP of the plots panel, once per result, on a subsample, the rest placed (Qt-free).

A UMAP of 84,518 cells costs about a minute; the same picture is drawn from a fit on at most
:data:`~napari_cellama._constants.DEFAULT_MAP_FIT_CELLS` cells (a seeded uniform subsample of
query and reference together, each in proportion to its size), and every other query cell is
*placed*: it sits at the mean UMAP position of its
:data:`~napari_cellama._constants.MAP_PLACE_NEIGHBORS` nearest fitted cells (cosine
neighbours, searched in the first :data:`~napari_cellama._constants.MAP_PCS` principal
components of the embeddings), as scanpy's ``ingest`` places new cells. So every query cell
is on the map and can be clicked; only the fitted ones shaped it, and :attr:`EmbeddingMap.note`
says so (``UMAP of 5,000 cells; 79,518 placed by nearest neighbour``). Reference cells are
shown as fitted (the subsample only).

:func:`cached_map` / :func:`store_map` keep one map per result object (by identity, dropped with
the result), so switching views, re-drawing or showing another annotation of the same run
never recomputes it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import DEFAULT_MAP_FIT_CELLS, DEFAULT_RANDOM_STATE, MAP_PCS, MAP_PLACE_NEIGHBORS
from ._progress import run

STAGE_MAP_FIT = "UMAP (fit)"
STAGE_MAP_PLACE = "UMAP (placing cells)"
_CHUNK = 8192

__all__ = ["EmbeddingMap", "cached_map", "embedding_map_of", "iter_embedding_map_of", "store_map"]


@dataclass
class EmbeddingMap:
    """A 2-D map of query (and reference) cells.

    ``coords``: columns ``dataset`` (``query`` / ``reference``), ``row`` (row in its dataset's
    embedding array), ``x``, ``y``, ``placed`` (True: positioned by its nearest fitted cells).
    """

    coords: pd.DataFrame
    n_fit: int
    n_placed: int

    @property
    def note(self) -> str:
        """``UMAP of 5,000 cells; 79,518 placed by nearest neighbour`` (or ``UMAP of N cells``)."""
        text = f"UMAP of {self.n_fit:,} cells"
        if self.n_placed:
            text += f"; {self.n_placed:,} placed by nearest neighbour"
        return text


def iter_embedding_map_of(query_embeddings, reference_embeddings=None, *, max_fit: int = DEFAULT_MAP_FIT_CELLS,
                          seed: int = DEFAULT_RANDOM_STATE, n_neighbors: int = 15) -> Iterator:
    """Generator: yields ``(stage, done, total)``, returns an :class:`EmbeddingMap`."""
    import umap

    parts = [("query", np.asarray(query_embeddings, dtype=np.float32))]
    if reference_embeddings is not None and len(reference_embeddings):
        parts.append(("reference", np.asarray(reference_embeddings, dtype=np.float32)))
    total = sum(len(e) for _, e in parts)
    rng = np.random.default_rng(seed)
    fit_rows = {}
    for name, emb in parts:
        take = len(emb) if total <= max_fit else max(1, int(round(max_fit * len(emb) / total)))
        fit_rows[name] = np.sort(rng.choice(len(emb), size=min(take, len(emb)), replace=False))
    x_fit = np.concatenate([emb[fit_rows[name]] for name, emb in parts])
    yield (STAGE_MAP_FIT, 0, 1)
    if len(x_fit) < 4:
        fit_xy = np.zeros((len(x_fit), 2), dtype=np.float32)
    else:
        fit_xy = umap.UMAP(n_neighbors=max(2, min(n_neighbors, len(x_fit) - 1)), metric="cosine",
                           random_state=seed, n_jobs=1).fit_transform(x_fit).astype(np.float32)
    yield (STAGE_MAP_FIT, 1, 1)

    query = parts[0][1]
    rest = np.setdiff1d(np.arange(len(query)), fit_rows["query"])
    rest_xy = np.zeros((len(rest), 2), dtype=np.float32)
    if len(rest):
        rest_xy = yield from _iter_place(x_fit, fit_xy, query[rest])
    frames = []
    start = 0
    for name, _emb in parts:
        rows = fit_rows[name]
        xy = fit_xy[start:start + len(rows)]
        start += len(rows)
        frames.append(pd.DataFrame({"dataset": name, "row": rows, "x": xy[:, 0], "y": xy[:, 1], "placed": False}))
        if name == "query" and len(rest):
            frames.append(pd.DataFrame({"dataset": name, "row": rest, "x": rest_xy[:, 0], "y": rest_xy[:, 1],
                                        "placed": True}))
    coords = pd.concat(frames, ignore_index=True)
    q = coords["dataset"] == "query"
    coords = pd.concat([coords[q].sort_values("row"), coords[~q]], ignore_index=True)
    return EmbeddingMap(coords, n_fit=len(x_fit), n_placed=len(rest))


def _iter_place(x_fit: np.ndarray, fit_xy: np.ndarray, x_rest: np.ndarray) -> Iterator:
    """Mean map position of each rest cell's nearest fitted cells (cosine, in principal components)."""
    from sklearn.decomposition import PCA

    def unit(a):
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.where(n > 0, n, 1.0)

    fit = unit(x_fit)
    n_pcs = max(1, min(MAP_PCS, fit.shape[1], len(fit) - 1))
    pca = PCA(n_components=n_pcs, random_state=0).fit(fit)
    f = pca.transform(fit).astype(np.float32)
    f_sq = (f * f).sum(axis=1)
    k = min(MAP_PLACE_NEIGHBORS, len(f))
    out = np.empty((len(x_rest), 2), dtype=np.float32)
    n_chunks = (len(x_rest) + _CHUNK - 1) // _CHUNK
    for c in range(n_chunks):
        yield (STAGE_MAP_PLACE, c, n_chunks)
        sl = slice(c * _CHUNK, (c + 1) * _CHUNK)
        r = pca.transform(unit(x_rest[sl])).astype(np.float32)
        d = f_sq[None, :] - 2.0 * (r @ f.T)  # squared distance up to the row's own norm
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[sl] = fit_xy[nn].mean(axis=1)
    yield (STAGE_MAP_PLACE, n_chunks, n_chunks)
    return out


def embedding_map_of(query_embeddings, reference_embeddings=None, **kwargs) -> EmbeddingMap:
    """Synchronous :func:`iter_embedding_map_of`."""
    return run(iter_embedding_map_of(query_embeddings, reference_embeddings, **kwargs))


# --------------------------------------------------------------------------- one map per result
_MAPS: dict[int, tuple] = {}


def cached_map(result) -> EmbeddingMap | None:
    """The map stored for this result object (None when there is none)."""
    entry = _MAPS.get(id(result))
    if entry is None or entry[0]() is not result:
        return None
    return entry[1]


def store_map(result, emap: EmbeddingMap) -> None:
    """Keep ``emap`` for ``result`` until the result is garbage-collected."""
    key = id(result)
    _MAPS[key] = (weakref.ref(result, lambda _ref, key=key: _MAPS.pop(key, None)), emap)
