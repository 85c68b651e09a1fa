"""Niche sentences and niche clustering of chosen cell types (issue 5).

A cell's *niche sentence* is its CELLama gene sentence followed by the cell types
of its spatial neighbours, nearest first. Embedding these sentences and clustering
the embeddings of one cell type splits it by what surrounds it (e.g. fibroblasts
among T cells vs fibroblasts along epithelium).

Spatial neighbours
------------------
Computed on cell centroids in microns (``obsm['spatial']``) with a
:class:`scipy.spatial.cKDTree` queried on all cores (``workers=-1``):

* ``k`` nearest cells (default :data:`~napari_cellama._constants.DEFAULT_SPATIAL_NEIGHBORS`), or
* every cell whose centroid lies within ``radius`` microns (distance <= radius).

The cell itself is never its own neighbour (a different cell at the very same
position is). Neighbours are ordered nearest first; the order of cells at exactly
equal distance is unspecified.

Sentence template (exact)
-------------------------
``mode="genes+niche"`` (default)::

    {gene sentence} {niche part}
    Top genes are A, B, and C. Nearest cells are Fibroblast, T cell, T cell, Epithelial.

``mode="niche"`` writes only ``{niche part}``; ``mode="genes"`` only the gene
sentence (the no-niche baseline). The gene sentence is
:mod:`napari_cellama.core.sentences`' (top ``top_k`` genes, no metadata). The
niche part lists every neighbour's type, nearest first, repeated as often as it
occurs, separated by ``", "`` (no "and")::

    Nearest cells are T1, T2, ..., Tn.     # two or more neighbours
    Nearest cell is T1.                    # one neighbour
    No cells are nearby.                   # none (radius mode only)

A neighbour without a label is written ``Unassigned``. With a large radius the
sentence can exceed the model's maximum sequence length (256 word pieces for
all-MiniLM); the model then truncates it, dropping the farthest neighbours first.

Text is assembled like :func:`~napari_cellama.core.sentences.format_sentences`:
one object array of tokens (each carrying its surrounding text) and one
``str.join`` - no Python loop per cell. Only the selected cell types get a
sentence, and identical sentences are embedded once
(:meth:`~napari_cellama.core.embed.Embedder.iter_encode` de-duplicates).

Clustering and cluster description
----------------------------------
* Leiden (default): ``scanpy.pp.neighbors(use_rep=..., metric="cosine",
  transformer="sklearn")`` (exact kNN graph of the embeddings, ``graph_neighbors``
  per cell) then ``scanpy.tl.leiden(flavor="igraph", n_iterations=2,
  directed=False, resolution=...)``; or KMeans (``n_clusters``, ``n_init=10``).
  Both are seeded by ``random_state``. Clusters are named ``"0"``, ``"1"``, ...
  by decreasing size.
* Composition: each selected cell's fraction of each cell type among its
  neighbours, averaged over the cells of a cluster (cells without neighbours are
  left out of the mean), so each row sums to 1.
* Markers: ``scanpy.tl.rank_genes_groups(method="wilcoxon", reference="rest")``
  between the clusters, on log-normalised expression of the selected cells
  (counts are scaled to the median total per cell and ``log1p``-ed; a matrix that
  is not integer-valued is taken as already log-normalised). Clusters of one cell
  are left out of the test.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    DEFAULT_SPATIAL_CHUNK,
    DEFAULT_NICHE_GRAPH_NEIGHBORS,
    DEFAULT_NICHE_MARKERS,
    DEFAULT_NICHE_RESOLUTION,
    DEFAULT_RANDOM_STATE,
    DEFAULT_SPATIAL_NEIGHBORS,
    DEFAULT_TOP_K,
    GENE,
    MARKER_COLUMNS,
    MARKER_LOGFC,
    MARKER_PCT_IN,
    MARKER_PCT_REST,
    MARKER_PVAL,
    MARKER_PVAL_ADJ,
    MARKER_SCORE,
    N_CELLS,
    N_SPATIAL_NEIGHBORS,
    NICHE_CLUSTER,
    NICHE_METHOD_KMEANS,
    NICHE_METHOD_LEIDEN,
    NICHE_MODE_BOTH,
    NICHE_MODE_GENES,
    NICHE_MODE_NICHE,
    NICHE_MODES,
    NICHE_SENTENCE,
    NO_NEIGHBORS_SENTENCE,
    STAGE_CLUSTER,
    STAGE_EMBED_NICHES,
    STAGE_MARKERS,
    STAGE_NICHE_SENTENCES,
    STAGE_SPATIAL_NEIGHBORS,
    UNASSIGNED,
)
from ..validators import (
    CellamaInputError,
    check_cell_types,
    check_choice,
    check_clustering,
    check_matrix,
    check_neighborhood,
    check_niche_labels,
    check_positive_int,
    check_spatial,
    check_top_k,
    check_unique_ids,
)
from ._progress import run
from .embed import Embedder
from .embedding_options import make_embedder
from .sentences import iter_cell_sentences

_RS = "\x1e"  # record separator ending each sentence in the joined text


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


# --------------------------------------------------------------------------- sentences


def format_niche_sentences(
    type_names: Sequence[str],
    indptr: np.ndarray,
    codes: np.ndarray,
    gene_sentences: Sequence[str] | None = None,
) -> list[str]:
    """Niche sentences from ragged neighbour type codes (template: module docstring).

    Parameters
    ----------
    type_names
        the cell type of each code.
    indptr, codes
        neighbour ``j`` of cell ``i`` has type ``type_names[codes[indptr[i] + j]]``,
        nearest first.
    gene_sentences
        each cell's gene sentence, written before the niche part; ``None`` for the
        niche part only.
    """
    names = [str(t).replace(_RS, " ") for t in type_names]
    g = len(names)
    indptr = np.asarray(indptr, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    n = len(indptr) - 1
    counts = np.diff(indptr)
    # token kinds: 0 only neighbour, 1 first of >= 2, 2 middle, 3 last of >= 2
    table = np.array(
        [f"Nearest cell is {t}.{_RS}" for t in names]
        + [f"Nearest cells are {t}" for t in names]
        + [f", {t}" for t in names]
        + [f", {t}.{_RS}" for t in names],
        dtype=object,
    )
    row_of = np.repeat(np.arange(n), counts)
    j = np.arange(len(codes)) - indptr[:-1][row_of]
    n_row = counts[row_of]
    kind = np.full(len(codes), 2, dtype=np.int64)
    kind[j == 0] = 1
    kind[j == n_row - 1] = 3
    kind[n_row == 1] = 0
    pre = gene_sentences is not None
    ntok = np.maximum(counts, 1) + int(pre)
    start = np.zeros(n, dtype=np.int64)
    np.cumsum(ntok[:-1], out=start[1:])
    first = start + int(pre)
    tokens = np.empty(int(ntok.sum()), dtype=object)
    tokens[first[row_of] + j] = table[kind * g + codes]
    tokens[first[counts == 0]] = NO_NEIGHBORS_SENTENCE + _RS
    if pre:
        gs = np.asarray(list(gene_sentences), dtype=object)
        if len(gs) != n:
            raise ValueError(f"{len(gs)} gene sentences for {n} cells")
        tokens[start] = gs + " "
    return "".join(tokens.tolist()).split(_RS)[:-1]


def _natural_key(text: str):
    """``"Cluster 2"`` sorts before ``"Cluster 10"``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def _type_categories(labels: pd.Series) -> list[str]:
    """Cell types in natural order, ``Unassigned`` last."""
    cats = sorted(set(labels.astype(str)) - {UNASSIGNED}, key=_natural_key)
    return cats + ([UNASSIGNED] if (labels == UNASSIGNED).any() else [])


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


def log_normalize(x) -> sp.csr_matrix:
    """Log-normalised copy of a cells x genes matrix (see module docstring)."""
    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    if m.data.size and np.array_equal(m.data, np.round(m.data)):
        totals = np.asarray(m.sum(axis=1)).ravel()
        pos = totals > 0
        target = float(np.median(totals[pos])) if pos.any() else 1.0
        scale = np.zeros_like(totals)
        scale[pos] = target / totals[pos]
        m = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ m)
        np.log1p(m.data, out=m.data)
    return m


def niche_markers(x, gene_names: Sequence[str], clusters, n_markers: int = DEFAULT_NICHE_MARKERS) -> pd.DataFrame:
    """Top ``n_markers`` marker genes of each cluster against the other clusters (Wilcoxon).

    Returns a long table with :data:`~napari_cellama._constants.MARKER_COLUMNS`
    (empty when fewer than two clusters have at least two cells).
    """
    import anndata as ad
    import scanpy as sc

    clusters = pd.Categorical(clusters)
    sizes = pd.Series(clusters).value_counts()
    groups = [str(c) for c in clusters.categories if sizes.get(c, 0) >= 2]
    if len(groups) < 2:
        return pd.DataFrame(columns=list(MARKER_COLUMNS))
    a = ad.AnnData(X=log_normalize(x), var=pd.DataFrame(index=pd.Index([str(g) for g in gene_names])))
    a.var_names_make_unique()
    a.obs[NICHE_CLUSTER] = pd.Categorical(np.asarray(clusters).astype(str), categories=[str(c) for c in clusters.categories])
    sc.tl.rank_genes_groups(
        a,
        NICHE_CLUSTER,
        groups=groups,
        reference="rest",
        method="wilcoxon",
        n_genes=int(min(n_markers, a.n_vars)),
        pts=True,
        use_raw=False,
    )
    df = sc.get.rank_genes_groups_df(a, group=groups)
    if "group" not in df.columns:  # scanpy drops it for a single group
        df.insert(0, "group", groups[0])
    df = df.rename(
        columns={
            "group": NICHE_CLUSTER,
            "names": GENE,
            "scores": MARKER_SCORE,
            "logfoldchanges": MARKER_LOGFC,
            "pvals": MARKER_PVAL,
            "pvals_adj": MARKER_PVAL_ADJ,
            "pct_nz_group": MARKER_PCT_IN,
            "pct_nz_reference": MARKER_PCT_REST,
        }
    )
    df[NICHE_CLUSTER] = df[NICHE_CLUSTER].astype(str)
    return df.loc[:, list(MARKER_COLUMNS)].reset_index(drop=True)


@functools.lru_cache(maxsize=4)
def _folder_tokenizer(folder: str):
    """Tokenizer and maximum sequence length of a sentence-transformers folder (no model weights)."""
    import json

    from transformers import AutoTokenizer

    limit = None
    cfg = Path(folder) / "sentence_bert_config.json"
    if cfg.exists():
        limit = json.loads(cfg.read_text()).get("max_seq_length")
    return AutoTokenizer.from_pretrained(folder), limit


def _tokenizer(embedder: Embedder):
    """``(tokenizer, max_seq_length)`` of the embedder's model, or ``(None, None)``."""
    if embedder.loaded and getattr(embedder, "_model", None) is not None:  # the exact model is in memory
        model = embedder.model
        return getattr(model, "tokenizer", None), getattr(model, "max_seq_length", None)
    try:
        return _folder_tokenizer(str(embedder.folder))
    except Exception:  # noqa: BLE001 - no tokenizer files: the length cannot be checked
        return None, None


def count_truncated(embedder: Embedder, sentences: Sequence[str]) -> tuple[int | None, int | None]:
    """``(n, limit)``: unique sentences longer than the model's ``limit`` word pieces (cut when embedded).

    ``(None, None)`` when the model's tokenizer or limit is unknown. Uses the tokenizer
    only: the model weights are not loaded for this.
    """
    tok, limit = _tokenizer(embedder)
    if tok is None or not limit:
        return None, None
    unique = list(dict.fromkeys(sentences))
    if not unique:
        return 0, int(limit)
    try:
        ids = tok(unique, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    except Exception:  # noqa: BLE001 - a tokenizer without this call signature: unknown
        return None, int(limit)
    return int(sum(len(i) > limit for i in ids)), int(limit)


# --------------------------------------------------------------------------- whole run


@dataclass
class NicheResult:
    """Everything one niche clustering run produced."""

    table: pd.DataFrame
    """One row per selected cell (index: cell id): cell_type, niche_cluster
    (categorical "0", "1", ... by decreasing size), n_spatial_neighbors, niche_sentence."""
    composition: pd.DataFrame
    """Cluster x cell type: mean fraction of each type among the cluster's cells' neighbours
    (rows sum to 1)."""
    sizes: pd.Series
    """Cells per cluster (name ``n_cells``)."""
    markers: pd.DataFrame
    """Top marker genes per cluster against the other clusters (columns ``MARKER_COLUMNS``)."""
    embeddings: np.ndarray
    """(selected cells, d) float32 embeddings of the niche sentences, rows in ``table`` order."""
    cell_composition: pd.DataFrame
    """Selected cell x cell type: fraction of each type among that cell's neighbours."""
    neighbors: SpatialNeighbors
    """Neighbour lists of the selected cells (indices are row positions in the query)."""
    params: dict = field(default_factory=dict)

    @property
    def clusters(self) -> pd.Series:
        """``niche_cluster`` of the selected cells."""
        return self.table[NICHE_CLUSTER]

    def clusters_for(self, cell_ids) -> pd.Series:
        """``niche_cluster`` for any cells (e.g. all cells of a layer); unselected cells are NaN."""
        ids = pd.Index(cell_ids).astype(str)
        return self.clusters.reindex(ids)

    def composition_table(self) -> pd.DataFrame:
        """``n_cells`` then the composition columns, indexed by ``niche_cluster`` (the CSV layout)."""
        out = self.composition.copy()
        out.insert(0, N_CELLS, self.sizes.reindex(out.index).to_numpy())
        return out

    def top_markers(self, n: int = 3) -> dict[str, list[str]]:
        """The first ``n`` marker genes of every cluster."""
        out: dict[str, list[str]] = {str(c): [] for c in self.composition.index}
        for cluster, genes in self.markers.groupby(NICHE_CLUSTER, sort=False)[GENE]:
            out[str(cluster)] = genes.head(n).tolist()
        return out

    def summary(self) -> str:
        """One line per cluster: size, the two most frequent neighbour types, top markers."""
        markers = self.top_markers(3)
        lines = [
            (f"{len(self.table)} cells of {', '.join(self.params.get('cell_types', []))} in "
             f"{len(self.sizes)} niche clusters ({self.params.get('method')})")
        ]
        for c in self.composition.index:
            comp = self.composition.loc[c].sort_values(ascending=False).head(2)
            near = ", ".join(f"{t} {v:.0%}" for t, v in comp.items() if v > 0)
            lines.append(f"  cluster {c}: {int(self.sizes[c])} cells; neighbours {near}; "
                         f"markers {', '.join(markers.get(str(c), [])) or '-'}")
        if self.params.get("n_truncated"):
            lines.append(
                f"note: {self.params['n_truncated']} sentences were longer than the model's "
                f"{self.params.get('max_seq_length')} word pieces and lost their farthest neighbours; "
                "use fewer neighbours, a smaller radius or --niche-only"
            )
        return "\n".join(lines)


def iter_niches(
    adata,
    labels,
    cell_types: Sequence[str] | str,
    *,
    k: int | None = None,
    radius: float | None = None,
    mode: str = NICHE_MODE_BOTH,
    top_k: int = DEFAULT_TOP_K,
    resolution: float | None = None,
    n_clusters: int | None = None,
    graph_neighbors: int = DEFAULT_NICHE_GRAPH_NEIGHBORS,
    n_markers: int = DEFAULT_NICHE_MARKERS,
    model=None,
    embedder: Embedder | None = None,
    device: str = "auto",
    random_state: int = DEFAULT_RANDOM_STATE,
    spatial_key: str = "spatial",
    max_cells: int | None = None,
) -> Iterator:
    """Generator of :func:`run_niches`: yields ``(stage, done, total)``, returns a :class:`NicheResult`."""
    if isinstance(labels, str):
        if labels not in adata.obs.columns:
            raise CellamaInputError(f"label column {labels!r} is not in the query's obs")
        labels = adata.obs[labels].to_numpy()
    check_choice(mode, NICHE_MODES, "niche sentence mode")
    top_k = check_top_k(top_k)
    k, radius = check_neighborhood(k, radius, DEFAULT_SPATIAL_NEIGHBORS)
    method, value = check_clustering(resolution, n_clusters, DEFAULT_NICHE_RESOLUTION)
    graph_neighbors = int(graph_neighbors)
    if graph_neighbors < 2:
        raise CellamaInputError(f"the embedding graph needs at least 2 neighbours per cell, got {graph_neighbors}")
    check_unique_ids(adata.obs_names, "query")
    xy = check_spatial(adata, spatial_key)
    aligned, n_missing = check_niche_labels(labels, adata.obs_names, UNASSIGNED)
    cell_types = check_cell_types(cell_types, aligned.unique())
    selected = np.flatnonzero(aligned.isin(cell_types).to_numpy())
    n_of_types = len(selected)
    if max_cells is not None:
        max_cells = check_positive_int(max_cells, "the maximum number of cells")
        if len(selected) > max_cells:
            rng = np.random.default_rng(random_state)
            selected = np.sort(rng.choice(selected, size=max_cells, replace=False))
    if method == NICHE_METHOD_KMEANS and value > len(selected):
        raise CellamaInputError(
            f"{value} clusters asked for {len(selected)} cells of {', '.join(cell_types)}; ask for fewer clusters"
        )
    if len(selected) < 3:
        raise CellamaInputError(
            f"only {len(selected)} cells of {', '.join(cell_types)}; choose cell types with at least 3 cells"
        )
    x = adata.X
    check_matrix(x, "query")  # gene sentences and marker genes

    yield (STAGE_SPATIAL_NEIGHBORS, 0, 1)
    neighbors = spatial_neighbors(xy, k=k, radius=radius, query=selected)
    categories = _type_categories(aligned)
    type_codes = pd.Categorical(aligned, categories=categories).codes.astype(np.int64)
    yield (STAGE_SPATIAL_NEIGHBORS, 1, 1)

    gene_sentences = None
    if mode != NICHE_MODE_NICHE:
        gene_sentences = yield from iter_cell_sentences(x[selected], [str(g) for g in adata.var_names], top_k)
    yield (STAGE_NICHE_SENTENCES, 0, 1)
    if mode == NICHE_MODE_GENES:
        sentences = list(gene_sentences)
    else:
        sentences = format_niche_sentences(categories, neighbors.indptr, type_codes[neighbors.indices], gene_sentences)
    yield (STAGE_NICHE_SENTENCES, 1, 1)

    embedder = embedder or make_embedder(model=model, device=device)
    emb = yield from embedder.iter_encode(sentences, STAGE_EMBED_NICHES)
    n_truncated, max_seq_length = count_truncated(embedder, sentences)

    yield (STAGE_CLUSTER, 0, 1)
    clusters = cluster_embeddings(
        emb,
        method,
        resolution=value if method == NICHE_METHOD_LEIDEN else DEFAULT_NICHE_RESOLUTION,
        n_clusters=value if method == NICHE_METHOD_KMEANS else None,
        graph_neighbors=graph_neighbors,
        random_state=random_state,
    )
    per_cell = neighbor_composition(neighbors, type_codes, len(categories))
    composition, sizes = cluster_composition(clusters, per_cell, neighbors.counts > 0, categories)
    yield (STAGE_CLUSTER, 1, 1)

    yield (STAGE_MARKERS, 0, 1)
    markers = niche_markers(x[selected], list(adata.var_names), clusters, n_markers)
    yield (STAGE_MARKERS, 1, 1)

    ids = pd.Index(adata.obs_names[selected].astype(str), name=CELL_ID)
    table = pd.DataFrame(
        {
            CELL_TYPE: aligned.to_numpy()[selected],
            NICHE_CLUSTER: clusters,
            N_SPATIAL_NEIGHBORS: neighbors.counts,
            NICHE_SENTENCE: sentences,
        },
        index=ids,
    )
    cell_comp = pd.DataFrame(per_cell.toarray(), index=ids, columns=pd.Index(categories, name=CELL_TYPE))
    params = {
        "cell_types": list(cell_types),
        "k": k,
        "radius": radius,
        "mode": mode,
        "top_k": top_k,
        "method": method,
        "resolution": float(value) if method == NICHE_METHOD_LEIDEN else None,
        "n_clusters": int(value) if method == NICHE_METHOD_KMEANS else None,
        "graph_neighbors": graph_neighbors,
        "n_markers": int(n_markers),
        "random_state": random_state,
        "model": embedder.model_id,
        "device": embedder.device,
        "n_selected": len(selected),
        "n_of_types": n_of_types,
        "max_cells": max_cells,
        "n_unique_sentences": int(pd.Index(sentences).nunique()),
        "n_unlabelled": n_missing,
        "n_truncated": n_truncated,
        "max_seq_length": max_seq_length,
    }
    return NicheResult(table, composition, sizes, markers, emb, cell_comp, neighbors, params)


def run_niches(adata, labels, cell_types, callback=None, **kwargs) -> NicheResult:
    """Niche sentences, embedding and clustering of the cells of ``cell_types``.

    Parameters
    ----------
    adata
        query AnnData: cells x genes counts (or log-normalised) in ``X``, gene
        symbols in ``var_names``, centroids in microns in ``obsm['spatial']``.
    labels
        cell type of every cell: a Series indexed by cell id (e.g. the transfer
        CSV's ``cell_type``), an array in ``adata.obs`` order, or an ``obs`` column
        name. Cells without a label are ``Unassigned`` neighbours.
    cell_types
        the cell types to cluster (only their cells are embedded).
    callback
        ``callback(stage, done, total)`` receives progress.
    **kwargs
        ``k`` or ``radius`` (neighbourhood), ``mode`` (``"genes+niche"``,
        ``"niche"``, ``"genes"``), ``top_k``, ``resolution`` (Leiden) or
        ``n_clusters`` (KMeans), ``graph_neighbors``, ``n_markers``, ``model`` /
        ``embedder`` / ``device``, ``random_state``, ``spatial_key``, ``max_cells``
        (cluster a random sample of at most that many cells of ``cell_types``,
        seeded by ``random_state``; their neighbours still come from all cells).
    """
    return run(iter_niches(adata, labels, cell_types, **kwargs), callback)


def iter_recluster(
    result: NicheResult,
    adata,
    *,
    resolution: float | None = None,
    n_clusters: int | None = None,
    graph_neighbors: int | None = None,
    n_markers: int | None = None,
    random_state: int | None = None,
) -> Iterator:
    """Generator of :func:`recluster`: yields ``(stage, done, total)``, returns a new :class:`NicheResult`."""
    method, value = check_clustering(resolution, n_clusters, DEFAULT_NICHE_RESOLUTION)
    p = dict(result.params)
    graph_neighbors = int(p.get("graph_neighbors", DEFAULT_NICHE_GRAPH_NEIGHBORS) if graph_neighbors is None
                          else graph_neighbors)
    n_markers = int(p.get("n_markers", DEFAULT_NICHE_MARKERS) if n_markers is None else n_markers)
    random_state = p.get("random_state", DEFAULT_RANDOM_STATE) if random_state is None else random_state
    ids = result.table.index
    pos = pd.Index(adata.obs_names.astype(str)).get_indexer(ids)
    if (pos < 0).any():
        raise CellamaInputError("the query does not hold the cells of this niche result; use the query it was run on")
    if method == NICHE_METHOD_KMEANS and value > len(ids):
        raise CellamaInputError(f"{value} clusters asked for {len(ids)} cells; ask for fewer clusters")
    yield (STAGE_CLUSTER, 0, 1)
    clusters = cluster_embeddings(
        result.embeddings, method,
        resolution=value if method == NICHE_METHOD_LEIDEN else DEFAULT_NICHE_RESOLUTION,
        n_clusters=value if method == NICHE_METHOD_KMEANS else None,
        graph_neighbors=graph_neighbors, random_state=random_state,
    )
    composition, sizes = cluster_composition(
        clusters, result.cell_composition.to_numpy(), result.neighbors.counts > 0, result.cell_composition.columns
    )
    yield (STAGE_CLUSTER, 1, 1)
    yield (STAGE_MARKERS, 0, 1)
    markers = niche_markers(adata.X[pos], list(adata.var_names), clusters, n_markers)
    yield (STAGE_MARKERS, 1, 1)
    table = result.table.copy()
    table[NICHE_CLUSTER] = np.asarray(clusters)
    table[NICHE_CLUSTER] = pd.Categorical(table[NICHE_CLUSTER], categories=list(clusters.categories))
    p.update(
        method=method,
        resolution=float(value) if method == NICHE_METHOD_LEIDEN else None,
        n_clusters=int(value) if method == NICHE_METHOD_KMEANS else None,
        graph_neighbors=graph_neighbors, n_markers=n_markers, random_state=random_state,
    )
    return NicheResult(table, composition, sizes, markers, result.embeddings, result.cell_composition,
                       result.neighbors, p)


def recluster(result: NicheResult, adata, callback=None, **kwargs) -> NicheResult:
    """Cluster the embeddings of an earlier :func:`run_niches` again (new ``resolution`` or
    ``n_clusters``) without re-embedding; composition and markers are recomputed.

    ``adata`` is the query the result was computed on (for the marker genes).
    """
    return run(iter_recluster(result, adata, **kwargs), callback)


__all__ = [
    "NicheResult",
    "SpatialNeighbors",
    "cluster_composition",
    "cluster_embeddings",
    "count_truncated",
    "format_niche_sentences",
    "iter_niches",
    "iter_recluster",
    "log_normalize",
    "neighbor_composition",
    "niche_markers",
    "recluster",
    "run_niches",
    "spatial_neighbors",
]
