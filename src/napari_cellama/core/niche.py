"""Niche sentences and niche clustering of chosen cell types (issue 5).

A cell's *niche sentence* is its CELLama gene sentence followed by the cell types
of its spatial neighbours, nearest first. Embedding these sentences and clustering
the embeddings of one cell type splits it by what surrounds it (e.g. fibroblasts
among T cells vs fibroblasts along epithelium).

Spatial neighbours (:mod:`~napari_cellama.core.spatial`), clustering
(:mod:`~napari_cellama.core.clustering`) and marker genes
(:mod:`~napari_cellama.core.markers`) live in their own modules; this one writes the
sentences and runs the whole step. Options: :class:`~napari_cellama.core.options.NicheOptions`
(neighbourhood :class:`~napari_cellama.core.options.KNearest` or
:class:`~napari_cellama.core.options.Radius`, clustering
:class:`~napari_cellama.core.options.Leiden` or :class:`~napari_cellama.core.options.KMeans`).

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
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    DEFAULT_NICHE_GRAPH_NEIGHBORS,
    DEFAULT_NICHE_MARKERS,
    DEFAULT_RANDOM_STATE,
    GENE,
    N_CELLS,
    N_SPATIAL_NEIGHBORS,
    NICHE_CLUSTER,
    NICHE_MODE_GENES,
    NICHE_MODE_NICHE,
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
    check_matrix,
    check_niche_labels,
    check_spatial,
    check_unique_ids,
)
from ._progress import run
from .clustering import cluster_composition, cluster_embeddings
from .embed import Embedder
from .embedding_options import make_embedder
from .markers import niche_markers
from .options import Clustering, KMeans, NicheOptions, clustering_from, merge_options
from .sentences import iter_cell_sentences
from .spatial import SpatialNeighbors, neighbor_composition, spatial_neighbors
from .truncation import count_truncated

_RS = "\x1e"  # record separator ending each sentence in the joined text

# --------------------------------------------------------------------------- sentences


def format_niche_sentences(
    type_names: Sequence[str],
    indptr: np.ndarray,
    codes: np.ndarray,
    *,
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
    """The flat record of the run: the options (:meth:`NicheOptions.flat`) and what the run found
    (``cell_types``, ``model``, ``n_selected``, ``n_unlabelled``, ``n_truncated``, ...)."""
    options: NicheOptions | None = None
    """The options the result was made with (``options.to_dict()`` for JSON / ``uns``)."""

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
    options: NicheOptions | None = None,
    model=None,
    embedder: Embedder | None = None,
    device: str = "auto",
    **keywords,
) -> Iterator:
    """Generator of :func:`run_niches`: yields ``(stage, done, total)``, returns a :class:`NicheResult`.

    ``options``: a :class:`~napari_cellama.core.options.NicheOptions`; instead, its values may be
    given as keywords (``k`` or ``radius``, ``resolution`` or ``n_clusters``, ``graph_neighbors``,
    ``mode``, ``top_k``, ``n_markers``, ``random_state``, ``spatial_key``, ``max_cells``).
    """
    options = merge_options(NicheOptions, options, keywords, "the niche options")
    flat = options.flat()
    k, radius, mode, top_k = flat["k"], flat["radius"], options.mode, options.top_k
    random_state, max_cells = options.random_state, options.max_cells
    if isinstance(labels, str):
        if labels not in adata.obs.columns:
            raise CellamaInputError(f"label column {labels!r} is not in the query's obs")
        labels = adata.obs[labels].to_numpy()
    check_unique_ids(adata.obs_names, "query")
    xy = check_spatial(adata, options.spatial_key)
    aligned, n_missing = check_niche_labels(labels, adata.obs_names, UNASSIGNED)
    cell_types = check_cell_types(cell_types, aligned.unique())
    selected = np.flatnonzero(aligned.isin(cell_types).to_numpy())
    n_of_types = len(selected)
    if max_cells is not None and len(selected) > max_cells:
        rng = np.random.default_rng(random_state)
        selected = np.sort(rng.choice(selected, size=max_cells, replace=False))
    if flat["n_clusters"] is not None and flat["n_clusters"] > len(selected):
        raise CellamaInputError(
            f"{flat['n_clusters']} clusters asked for {len(selected)} cells of {', '.join(cell_types)}; "
            "ask for fewer clusters"
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
        sentences = format_niche_sentences(categories, neighbors.indptr, type_codes[neighbors.indices], gene_sentences=gene_sentences)
    yield (STAGE_NICHE_SENTENCES, 1, 1)

    embedder = embedder or make_embedder(model=model, device=device)
    emb = yield from embedder.iter_encode(sentences, STAGE_EMBED_NICHES)
    n_truncated, max_seq_length = count_truncated(embedder, sentences)

    yield (STAGE_CLUSTER, 0, 1)
    clusters = _cluster(emb, options.clustering, random_state)
    per_cell = neighbor_composition(neighbors, type_codes, len(categories))
    composition, sizes = cluster_composition(clusters, per_cell, neighbors.counts > 0, categories)
    yield (STAGE_CLUSTER, 1, 1)

    yield (STAGE_MARKERS, 0, 1)
    markers = niche_markers(x[selected], list(adata.var_names), clusters, n_markers=options.n_markers)
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
        **flat,
        "model": embedder.model_id,
        "device": embedder.device,
        "n_selected": len(selected),
        "n_of_types": n_of_types,
        "n_unique_sentences": int(pd.Index(sentences).nunique()),
        "n_unlabelled": n_missing,
        "n_truncated": n_truncated,
        "max_seq_length": max_seq_length,
    }
    return NicheResult(table, composition, sizes, markers, emb, cell_comp, neighbors, params, options)


def _cluster(embeddings: np.ndarray, clustering: Clustering, random_state: int) -> pd.Categorical:
    if isinstance(clustering, KMeans):
        return cluster_embeddings(embeddings, clustering.method.value, n_clusters=clustering.n_clusters,
                                  random_state=random_state)
    return cluster_embeddings(embeddings, clustering.method.value, resolution=clustering.resolution,
                              graph_neighbors=clustering.graph_neighbors, random_state=random_state)


def run_niches(adata, labels, cell_types, *, options: NicheOptions | None = None, callback=None,
               **keywords) -> NicheResult:
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
    options
        a :class:`~napari_cellama.core.options.NicheOptions` (neighbourhood, clustering,
        sentence mode, ``top_k``, ``n_markers``, ``random_state``, ``max_cells`` - cluster
        a random sample of at most that many cells of ``cell_types``, seeded by
        ``random_state``; their neighbours still come from all cells).
    callback
        ``callback(stage, done, total)`` receives progress.
    **keywords
        ``model`` / ``embedder`` / ``device``; or the options as keywords (see :func:`iter_niches`).
    """
    return run(iter_niches(adata, labels, cell_types, options=options, **keywords), callback)


def iter_recluster(
    result: NicheResult,
    adata,
    *,
    clustering: Clustering | None = None,
    resolution: float | None = None,
    n_clusters: int | None = None,
    graph_neighbors: int | None = None,
    n_markers: int | None = None,
    random_state: int | None = None,
) -> Iterator:
    """Generator of :func:`recluster`: yields ``(stage, done, total)``, returns a new :class:`NicheResult`.

    The new clustering is ``clustering`` (:class:`~napari_cellama.core.options.Leiden` or
    :class:`~napari_cellama.core.options.KMeans`), or ``resolution`` / ``n_clusters``
    (neither: Leiden at the default resolution); ``graph_neighbors``, ``n_markers`` and
    ``random_state`` default to the result's.
    """
    base = result.options or NicheOptions.from_flags(
        k=result.params.get("k"), radius=result.params.get("radius"),
        graph_neighbors=result.params.get("graph_neighbors", DEFAULT_NICHE_GRAPH_NEIGHBORS),
        n_markers=result.params.get("n_markers", DEFAULT_NICHE_MARKERS),
        random_state=result.params.get("random_state", DEFAULT_RANDOM_STATE),
    )
    if clustering is None:
        if graph_neighbors is None:
            graph_neighbors = result.params.get("graph_neighbors", DEFAULT_NICHE_GRAPH_NEIGHBORS)
        clustering = clustering_from(resolution, n_clusters, graph_neighbors)
    elif resolution is not None or n_clusters is not None:
        raise CellamaInputError("give either clustering= or resolution / n_clusters, not both")
    options = base.replace(
        clustering=clustering,
        n_markers=base.n_markers if n_markers is None else n_markers,
        random_state=base.random_state if random_state is None else random_state,
    )
    ids = result.table.index
    pos = pd.Index(adata.obs_names.astype(str)).get_indexer(ids)
    if (pos < 0).any():
        raise CellamaInputError("the query does not hold the cells of this niche result; use the query it was run on")
    if isinstance(clustering, KMeans) and clustering.n_clusters > len(ids):
        raise CellamaInputError(f"{clustering.n_clusters} clusters asked for {len(ids)} cells; ask for fewer clusters")
    yield (STAGE_CLUSTER, 0, 1)
    clusters = _cluster(result.embeddings, clustering, options.random_state)
    composition, sizes = cluster_composition(
        clusters, result.cell_composition.to_numpy(), result.neighbors.counts > 0, result.cell_composition.columns
    )
    yield (STAGE_CLUSTER, 1, 1)
    yield (STAGE_MARKERS, 0, 1)
    markers = niche_markers(adata.X[pos], list(adata.var_names), clusters, n_markers=options.n_markers)
    yield (STAGE_MARKERS, 1, 1)
    table = result.table.copy()
    table[NICHE_CLUSTER] = np.asarray(clusters)
    table[NICHE_CLUSTER] = pd.Categorical(table[NICHE_CLUSTER], categories=list(clusters.categories))
    flat = options.flat()
    p = dict(result.params)
    p.update({key: flat[key] for key in ("method", "resolution", "n_clusters", "graph_neighbors", "n_markers",
                                         "random_state")})
    return NicheResult(table, composition, sizes, markers, result.embeddings, result.cell_composition,
                       result.neighbors, p, options)


def recluster(result: NicheResult, adata, callback=None, **kwargs) -> NicheResult:
    """Cluster the embeddings of an earlier :func:`run_niches` again (new ``resolution`` or
    ``n_clusters``) without re-embedding; composition and markers are recomputed.

    ``adata`` is the query the result was computed on (for the marker genes).
    """
    return run(iter_recluster(result, adata, **kwargs), callback)


__all__ = [
    "NicheResult",
    "format_niche_sentences",
    "iter_niches",
    "iter_recluster",
    "recluster",
    "run_niches",
]
