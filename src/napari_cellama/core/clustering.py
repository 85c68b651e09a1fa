"""Clustering of embeddings (Leiden or KMeans) and the neighbour composition of each cluster.

* Leiden (default): ``scanpy.pp.neighbors(use_rep=..., metric="cosine",
  transformer="sklearn")`` (exact kNN graph of the embeddings, ``graph_neighbors``
  per cell) then ``scanpy.tl.leiden(flavor="igraph", n_iterations=2,
  directed=False, resolution=...)``; or KMeans (``n_clusters``, ``n_init=10``).
  Both are seeded by ``random_state``. Clusters are named ``"0"``, ``"1"``, ...
  by decreasing size.
* Composition: each selected cell's fraction of each cell type among its
  neighbours, averaged over the cells of a cluster (cells without neighbours are
  left out of the mean), so each row sums to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    CELL_TYPE,
    DEFAULT_NICHE_GRAPH_NEIGHBORS,
    DEFAULT_NICHE_RESOLUTION,
    DEFAULT_RANDOM_STATE,
    N_CELLS,
    NICHE_CLUSTER,
    NICHE_METHOD_KMEANS,
    NICHE_METHOD_LEIDEN,
)
from ..validators import (
    CellamaInputError,
    check_choice,
)

# --------------------------------------------------------------------------- clustering


def _relabel_by_size(raw: np.ndarray) -> pd.Categorical:
    """Cluster names "0", "1", ... by decreasing size (ties: first occurrence)."""
    codes, uniques = pd.factorize(pd.Series(raw))
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.lexsort((np.arange(len(uniques)), -sizes))
    new = np.empty(len(uniques), dtype=np.int64)
    new[order] = np.arange(len(uniques))
    cats = [str(i) for i in range(len(uniques))]
    return pd.Categorical.from_codes(new[codes], categories=cats)


def cluster_embeddings(
    embeddings: np.ndarray,
    method: str = NICHE_METHOD_LEIDEN,
    *,
    resolution: float = DEFAULT_NICHE_RESOLUTION,
    n_clusters: int | None = None,
    graph_neighbors: int = DEFAULT_NICHE_GRAPH_NEIGHBORS,
    random_state: int = DEFAULT_RANDOM_STATE,
) -> pd.Categorical:
    """Cluster rows of ``embeddings`` (Leiden on a cosine kNN graph, or KMeans).

    Returns a categorical of cluster names ``"0"``, ``"1"``, ... ordered by
    decreasing size.
    """
    check_choice(method, (NICHE_METHOD_LEIDEN, NICHE_METHOD_KMEANS), "clustering method")
    emb = np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    if n == 0:
        return pd.Categorical([], categories=[])
    if method == NICHE_METHOD_KMEANS:
        if n_clusters is None:
            raise CellamaInputError("KMeans needs a number of clusters (--n-clusters)")
        if n_clusters > n:
            raise CellamaInputError(f"{n_clusters} clusters asked for {n} selected cells; ask for fewer clusters")
        from sklearn.cluster import KMeans

        raw = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=random_state).fit_predict(emb)
        return _relabel_by_size(raw)
    if n < 3:
        return _relabel_by_size(np.zeros(n, dtype=np.int64))
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)))
    a.obsm["X_niche"] = emb
    sc.pp.neighbors(
        a,
        n_neighbors=int(max(2, min(graph_neighbors, n - 1))),
        use_rep="X_niche",
        metric="cosine",
        transformer="sklearn",
        random_state=random_state,
    )
    sc.tl.leiden(
        a, resolution=float(resolution), flavor="igraph", n_iterations=2, directed=False, random_state=random_state
    )
    return _relabel_by_size(a.obs["leiden"].to_numpy())


def cluster_composition(clusters, per_cell, has_neighbors: np.ndarray, cell_types: Sequence[str]):
    """``(composition, sizes)``: mean neighbour-type fractions and cell count of every cluster.

    ``per_cell`` is the cells x types fraction matrix (:func:`neighbor_composition`);
    cells without neighbours (``has_neighbors`` False) are left out of the mean.
    """
    clusters = pd.Categorical(clusters)
    n = len(clusters)
    per_cell = sp.csr_matrix(per_cell)
    onehot = sp.csr_matrix(
        (np.asarray(has_neighbors, dtype=np.float64), (clusters.codes, np.arange(n))),
        shape=(len(clusters.categories), n),
    )
    n_with = np.asarray(onehot.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        comp = np.asarray((onehot @ per_cell).todense()) / n_with[:, None]
    names = pd.Index([str(c) for c in clusters.categories], name=NICHE_CLUSTER)
    composition = pd.DataFrame(comp, index=names, columns=pd.Index(list(cell_types), name=CELL_TYPE))
    sizes = pd.Series(np.bincount(clusters.codes, minlength=len(names)), index=names, name=N_CELLS)
    return composition, sizes



__all__ = ["cluster_composition", "cluster_embeddings"]
