"""The background job of the "4. Review" dock (plain functions, testable without Qt).

:func:`prepare_review` runs once per shown transfer, off the GUI thread: reference markers
per type (computed once), the evidence index of the transfer's embeddings, the query's
expression of those markers for the dotplot, and the reference fit report over the Xenium
run's graph clusters (else Leiden on the query's expression), whose per-cell clusters it
keeps so that a flagged cluster can be shown on the tissue and named in one step.

:func:`prepare_dotplot` is the markers + dotplot part alone (the Plots dock's "marker
dotplot"); both keep that part per transfer result (:func:`cached_markers`), so whichever dock
asks second reuses it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import pandas as pd

STAGE_MARKERS = "reference markers"
STAGE_EVIDENCE = "evidence index"
STAGE_FIT = "reference fit report"
XENIUM_CLUSTER_SOURCE = "the Xenium run's graph clusters (analysis/clustering/gene_expression_graphclust)"


@dataclass
class ReviewData:
    """What the review dock shows, computed once per transfer."""

    markers: pd.DataFrame
    index: Any
    """:class:`~napari_cellama.core.evidence.EvidenceIndex` (None without embeddings)."""
    dotplot: Any
    """:class:`~napari_cellama.core.dotplot.Dotplot` of the markers over the query."""
    fit_report: Any
    fit_clusters: pd.Series | None
    """Cluster of each cell the fit report was computed over (by cell id)."""


def prepare_review(result, annotation, session_inputs: dict):
    """Generator: ``(stage, done, total)`` ... returns a :class:`ReviewData`.

    ``session_inputs``: ``query``, ``reference``, ``label_key``, ``xenium_root`` of the session.
    """
    from ..core.evidence import EvidenceIndex
    from ..core.fit_report import leiden_clusters, reference_fit_report

    query, root = session_inputs.get("query"), session_inputs.get("xenium_root")
    total = 3
    yield (STAGE_MARKERS, 0, total)
    markers, dotplot = markers_and_dotplot(result, session_inputs)
    yield (STAGE_EVIDENCE, 1, total)
    index = None
    if result is not None and getattr(result, "query_embeddings", None) is not None:
        index = EvidenceIndex(result, query, markers)
    yield (STAGE_FIT, 2, total)
    report, clusters = None, None
    if query is not None:
        table = result.table if result is not None else annotation.table
        source = None
        if root is not None:
            from ..io.xenium import read_xenium_clusters

            clusters = read_xenium_clusters(root)
            source = XENIUM_CLUSTER_SOURCE if clusters is not None else None
        if clusters is None:
            cells = pd.Index(table.index.astype(str))
            sub = query[query.obs_names.get_indexer(cells)]
            clusters = pd.Series(pd.Categorical(leiden_clusters(sub.X)).astype(str), index=cells, name="leiden")
            source = "Leiden on the query's expression"
        clusters = pd.Series(clusters).astype(str)
        clusters.index = clusters.index.astype(str)
        ref, key = session_inputs.get("reference"), session_inputs.get("label_key")
        report = reference_fit_report(table, query, clusters, cluster_source=source,  # + panel resolution
                                      reference=ref if key else None, label_key=key)
    yield (STAGE_FIT, 3, total)
    return ReviewData(markers, index, dotplot, report, clusters)


def prepare_dotplot(result, session_inputs: dict):
    """Generator: the markers and dotplot part of :func:`prepare_review` alone; returns a
    :class:`ReviewData` without evidence index or fit report (the Plots dock's dotplot)."""
    yield (STAGE_MARKERS, 0, 1)
    markers, dotplot = markers_and_dotplot(result, session_inputs)
    yield (STAGE_MARKERS, 1, 1)
    return ReviewData(markers, None, dotplot, None, None)


_PARTS: dict = {}


def cached_markers(result):
    """``(markers, dotplot)`` kept for this transfer result, or None."""
    entry = _PARTS.get(id(result))
    return entry[1] if entry is not None and entry[0]() is result else None


def markers_and_dotplot(result, session_inputs: dict) -> tuple:
    """``(reference markers per type, Dotplot of them over the query)`` of a transfer
    ``result`` (None: of the session's reference and query), computed once per result."""
    from ..core.dotplot import Dotplot, marker_genes_in_order
    from ..core.reference_markers import reference_markers

    if result is not None:
        kept = cached_markers(result)
        if kept is not None:
            return kept
    query, reference = session_inputs.get("query"), session_inputs.get("reference")
    label_key = session_inputs.get("label_key")
    markers = pd.DataFrame(columns=["cell_type", "rank", "gene", "score", "fraction_in", "fraction_out", "mean_in"])
    if reference is not None:
        if result is not None and result.reference_labels is not None:
            labels = result.reference_labels
            genes = list(result.panel.shared_genes) if result.panel is not None else None
        else:
            labels = reference.obs[label_key].dropna().astype(str) if label_key in reference.obs else None
            genes = None if query is None else [g for g in query.var_names if g in set(reference.var_names)]
        if labels is not None:
            markers = reference_markers(reference, labels, genes)
    dotplot = Dotplot(query, marker_genes_in_order(markers)) if query is not None and len(markers) else None
    if result is not None:
        key = id(result)
        try:
            _PARTS[key] = (weakref.ref(result, lambda _r, key=key: _PARTS.pop(key, None)), (markers, dotplot))
        except TypeError:  # a result that cannot be weakly referenced is not kept
            pass
    return markers, dotplot
