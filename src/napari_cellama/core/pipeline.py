"""The whole CELLama transfer chain: shared panel, sentences, embedding, kNN."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_TOP_K,
    EMBED_CACHE,
    EMBED_MODE,
    METHOD_KNN,
    SENTENCE,
    STAGE_EMBED_QUERY,
    STAGE_EMBED_REFERENCE,
    STAGE_PANEL,
    UNASSIGNED,
)
from ..validators import (
    check_metadata,
    check_n_neighbors,
    check_top_k,
    check_unique_ids,
    check_usable_reference,
)
from ._progress import run
from .embed import Embedder
from .embedding_options import make_embedder
from .head_transfer import CellSet, iter_head_transfer
from .panel import PanelReport, shared_panel
from .sentences import iter_cell_sentences
from .transfer import iter_knn_transfer, unassign_cells
from .transfer_options import TransferOptions
from .unknown import add_unknown_score


@dataclass
class TransferResult:
    """Everything one transfer run produced."""

    table: pd.DataFrame
    """One row per query cell (index: cell id): cell_type, transferred_type, confidence,
    distance, runner_up, nearest_reference, sentence."""
    query_embeddings: np.ndarray
    reference_embeddings: np.ndarray
    reference_labels: pd.Series
    panel: PanelReport
    params: dict = field(default_factory=dict)


def iter_transfer(
    query: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    top_k: int = DEFAULT_TOP_K,
    model=None,
    k: int = DEFAULT_N_NEIGHBORS,
    metadata: Sequence[str] | None = None,
    embedder: Embedder | None = None,
    device: str = "auto",
    mode: str | None = None,
    cache=None,
    max_per_type: int | None = None,
    min_confidence: float = 0.0,
    max_distance: float | None = None,
    options: TransferOptions | None = None,
    clusters: pd.Series | None = None,
) -> Iterator:
    """Generator of :func:`run_transfer`: yields ``(stage, done, total)``, returns a :class:`TransferResult`.

    ``options`` (:class:`TransferOptions`) holds the method and every threshold; when given,
    it replaces ``top_k``, ``k``, ``metadata``, ``max_per_type``, ``min_confidence`` and
    ``max_distance``. Without it those keywords make the options, with the default method.
    ``clusters``: query clusters by cell id (e.g. :func:`napari_cellama.io.read_xenium_clusters`)
    for the cluster evidence of the unknown score; None: Leiden on the query's shared panel."""
    if options is None:
        options = TransferOptions(top_k=check_top_k(top_k), k=check_n_neighbors(k), metadata=tuple(metadata or ()),
                                  max_per_type=max_per_type or None, min_confidence=min_confidence,
                                  max_distance=max_distance)
    top_k, k, metadata, max_per_type = options.top_k, options.k, list(options.metadata), options.max_per_type
    min_confidence, max_distance = options.min_confidence, options.max_distance
    from ..io.readers import clean_reference_labels  # '' / 'nan' = missing; sentinel names kept apart

    reference = clean_reference_labels(reference, label_key)
    metadata = check_metadata(query, metadata, "query")
    check_metadata(reference, metadata, "reference")
    check_unique_ids(query.obs_names, "query")
    yield (STAGE_PANEL, 0, 1)
    q, r, report = shared_panel(query, reference, top_k)
    # reference cells vote only with a label and at least one detected shared gene
    usable = r.obs[label_key].notna().to_numpy() & (np.asarray((r.X > 0).sum(axis=1)).ravel() > 0)
    check_usable_reference(r.obs[label_key].notna().to_numpy(), usable, label_key)
    if not usable.all():
        r = r[usable].copy()
    if max_per_type:
        from .subsample import subsample_reference

        r = subsample_reference(r, label_key, max_per_type)
    yield (STAGE_PANEL, 1, 1)
    genes = list(q.var_names)
    ref_sentences = yield from iter_cell_sentences(r.X, genes, top_k, obs=r.obs, metadata=metadata)
    query_sentences = yield from iter_cell_sentences(q.X, genes, top_k, obs=q.obs, metadata=metadata)
    embedder = embedder or make_embedder(model=model, device=device, mode=mode, cache=cache)
    # the reference is always embedded exactly (a surrogate embedder learns from it)
    ref_emb = yield from getattr(embedder, "iter_encode_exact", embedder.iter_encode)(ref_sentences,
                                                                                      STAGE_EMBED_REFERENCE)
    ref_stats = dict(getattr(embedder, "last_stats", {}))
    query_emb = yield from embedder.iter_encode(query_sentences, STAGE_EMBED_QUERY)
    query_stats = dict(getattr(embedder, "last_stats", {}))
    labels = r.obs[label_key].astype(str)
    # identical sentences have identical embeddings: one row per distinct sentence from here on
    # (``rows[codes]``: per cell), searched once each; per-cell rows only in the result
    codes, _ = pd.factorize(pd.Series(query_sentences, dtype=object))
    first = np.unique(codes, return_index=True)[1] if len(codes) else np.zeros(0, dtype=np.int64)
    rows = np.ascontiguousarray(query_emb[first])
    del query_emb
    query_clusters = None if clusters is None else \
        pd.Series(clusters).astype(object).reindex(q.obs_names).to_numpy(dtype=object)
    heads = evidence = None
    if hasattr(embedder, "iter_refine"):  # surrogate mode: exact re-embedding where a label is not robust
        # a front end that listens gets the check's labels of this method from the surrogate vectors
        # as provisional labels (``on_labels``); a kNN vote published first agreed with the final
        # ensemble labels on only 12 % of the section's cells (docs/performance.md)
        label_fn, heads, query_clusters = _label_function(q, r, (ref_emb, labels.to_numpy(), codes),
                                                          options, query_clusters)
        evidence = getattr(label_fn, "cluster_evidence", None)  # computed once, for the transfer too
        rows = yield from embedder.iter_refine(rows, label_fn, per_sentence=True,
                                               on_labels=_publisher(q, getattr(embedder, "mode", None)))
        del label_fn
    no_genes = np.asarray((q.X > 0).sum(axis=1)).ravel() == 0
    if options.method == METHOD_KNN:
        table = yield from iter_knn_transfer(
            rows,
            ref_emb,
            labels.to_numpy(),
            k=k,
            reference_index=r.obs_names,
            min_confidence=min_confidence,
            max_distance=max_distance,
        )
        if len(first) < len(codes):
            table = table.iloc[codes]
        table.index = pd.Index(q.obs_names)
        add_unknown_score(table, CellSet(rows, q.X, q.obs_names, sentence_codes=codes),
                          CellSet(ref_emb, r.X, r.obs_names, labels=labels.to_numpy()), options=options)
    else:
        table = yield from iter_head_transfer(
            CellSet(rows, q.X, q.obs_names, sentence_codes=codes, clusters=query_clusters),
            CellSet(ref_emb, r.X, r.obs_names, labels=labels.to_numpy()),
            options,
            heads=heads,
            cluster_evidence=evidence,
        )
    table.index.name = CELL_ID
    table[SENTENCE] = query_sentences
    # a cell without any detected shared gene has no sentence to compare: it stays Unassigned
    unassign_cells(table, no_genes)
    params = {
        "method": options.method,
        "options": options.to_dict(),
        "label_key": label_key,
        "top_k": top_k,
        "k": int(k),
        "metadata": list(metadata),
        "model": embedder.model_id,
        "device": embedder.device,
        EMBED_MODE: getattr(embedder, "mode", "exact"),
        "max_per_type": None if not max_per_type else int(max_per_type),
        "n_reference": int(r.n_obs),
        EMBED_CACHE: {
            "folder": None if getattr(embedder, "cache", None) is None else str(embedder.cache.root),
            "reference": ref_stats,
            "query": query_stats,
        },
        "min_confidence": float(min_confidence),
        "max_distance": None if max_distance is None else float(max_distance),
    }
    if hasattr(embedder, "iter_refine"):
        params["surrogate_check"] = embedder.last_check
    return TransferResult(table, rows[codes] if len(first) < len(codes) else rows, ref_emb, labels, report, params)


def _publisher(q, mode):
    """``on_labels`` of the surrogate check: publish its labels (before re-embedding) as provisional."""
    from .provisional import publish_labels

    def publish(labels) -> bool:
        labels = np.asarray(labels, dtype=object).copy()
        labels[np.asarray((q.X > 0).sum(axis=1)).ravel() == 0] = UNASSIGNED  # as the final table
        return publish_labels(labels, q.obs_names, embedding_mode=mode, source="surrogate check")

    return publish


def _label_function(q, r, reference, options: TransferOptions, query_clusters):
    """``(label_fn, heads, clusters)`` for the surrogate check: the final labels of
    ``options.method`` (:mod:`.surrogate_label`); the heads are fitted here once and the query
    clusters picked once (both then go to the transfer itself)."""
    from .surrogate_label import KnnLabelFunction, head_label_function
    from .surrogate_label import query_clusters as pick_clusters

    ref_emb, labels, codes = reference
    if options.method == METHOD_KNN:
        return KnnLabelFunction(ref_emb, labels, codes, options.k), None, query_clusters
    from .head_transfer import fit_method_heads

    reference_cells = CellSet(ref_emb, r.X, r.obs_names, labels=labels)
    heads = fit_method_heads(reference_cells, options)
    if options.calls_unknown and options.unknown_clusters:
        query_clusters = pick_clusters(q.X, query_clusters)
    fn = head_label_function(CellSet(None, q.X, q.obs_names, sentence_codes=codes, clusters=query_clusters),
                             reference_cells, options, heads)
    return fn, heads, query_clusters


def run_transfer(query, reference, label_key, *, top_k=DEFAULT_TOP_K, model=None, k=DEFAULT_N_NEIGHBORS,
                 metadata=None, callback=None, **kwargs) -> TransferResult:
    """Run the whole chain and return a :class:`TransferResult` (``callback(stage, done, total)``)."""
    return run(iter_transfer(query, reference, label_key, top_k=top_k, model=model, k=k, metadata=metadata,
                             **kwargs), callback)


def transfer_labels(
    query: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    top_k: int = DEFAULT_TOP_K,
    model=None,
    k: int = DEFAULT_N_NEIGHBORS,
    metadata: Sequence[str] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Transfer ``reference.obs[label_key]`` to every query cell.

    Restricts both datasets to their shared genes, writes a top-``top_k`` gene
    sentence per cell (plus ``metadata`` columns), embeds the sentences with
    ``model`` (default: the offline all-MiniLM-L6-v2) and votes among the ``k``
    nearest reference cells by cosine similarity.

    Returns a DataFrame indexed by query cell id with ``cell_type``,
    ``confidence``, ``distance``, ``runner_up`` (and ``transferred_type``,
    ``nearest_reference``, ``sentence``).
    """
    return run_transfer(query, reference, label_key, top_k=top_k, model=model, k=k, metadata=metadata,
                        **kwargs).table
