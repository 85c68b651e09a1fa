"""Co-clustering evidence for Unknown: query cells that form a cluster without reference cells.

Leiden on the reference and the query *together* (their shared-panel counts stacked, the same
clustering as :func:`~.fit_report.leiden_clusters`): cells of a type both datasets hold fall into
the same clusters in the ratio of that type's cells in the two datasets, whatever the clustering
does with them - a naive / memory T continuum carved into small clusters by their detections on a
small panel is carved the same way in both, so its clusters stay mixed. A type the reference
lacks forms clusters of query cells only (or with a few reference cells). A joint cluster with
``n`` cells of which ``n_ref`` are reference cells is *short of reference cells* when both tests
reject (``p`` is the larger of the two, Bonferroni over the clusters):

1. **against the typical share** ``s`` (the median over the query's cells of their cluster's
   reference share; a donor or protocol shift that keeps the datasets apart everywhere moves
   ``s`` and cancels): ``n_clusters x P(Binomial(n, s) <= n_ref)``;
2. **against the share its own reference cells predict** (seventh session: composition-robust):
   per reference type ``t`` the typical ratio ``rho_t`` of query to reference cells where ``t``'s
   reference cells lie (:func:`type_ratios`: a median over the clusters weighted by ``t``'s
   reference cells, mixed clusters divided among their types), and for the cluster
   ``s_c = n_ref / (n_ref + sum_t rho_t n_ref(t))`` (a cluster without reference cells: the
   largest ``rho_t``): ``n_clusters x P(Binomial(n, s_c) <= n_ref)``. A type three times as common
   in the query as in a reference capped per type has three query cells per reference cell in
   its own clusters; test 1 alone called it missing (the demo: 34 of 51 B cells), test 2 does not.

The cluster's score is ``1 - p`` (clipped to 0..1): 0.95, the default level, when so few
reference cells would be seen by chance with probability 0.05 in any cluster. It is used only
under the query-relative call (:func:`.unknown.with_cluster_evidence`), capped by the cell's own
score plus ``UNKNOWN_JOINT_CELL_MARGIN``. On by default since the eighth session
(``TransferOptions.unknown_coclustering``; the CLI's ``--no-coclustering``).

What test 2 cannot see: a missing type whose cells fall among *most* of a present type's reference
cells (a left-out CD14+ monocyte population in the clusters of the reference's FCGR3A+ monocytes
and dendritic cells on a 145-gene panel; NK among CD8 T). From counts per cluster that is the same
as that present type being more common in the query; the per-cell and residual evidence remain.
Capping each type's ratio by the query's predicted composition (the eighth session) catches the
monocytes but calls a type that is rare in the reference and common in the query Unknown, so it
was not kept; nor were the ninth session's within-type, residual-space and embedding-space joint
clusterings, or type ratios from finer joint clusters (fragile under a reference capped per type).
A per-cell neighbourhood version of this test is a measured lead, not built ("Tenth session").
Measured in docs/quality.md (benchmark 4, "Seventh session" to "Tenth session").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

JOINT_ENRICHMENT = "joint_enrichment"
"""Table column: the score of the cell's joint reference + query cluster (``1 - p``, see the module
doc; NaN where it was not computed: the absolute call, or the option off)."""
JOINT_COLUMNS = ("cluster", "n_cells", "n_reference", "reference_share", "p_value", "score")
"""Columns of :func:`joint_cluster_table` (with ``reference_labels`` also ``expected_share``, the
share the cluster's reference cells' types predict, before ``p_value``)."""
BY_TYPE = True
"""The Unknown call's co-clustering test also needs a cluster short of reference cells against the
share its reference cells' types predict (:func:`type_ratios`); False: the typical share alone
(the sixth session's rule; ``benchmarks/quality_transfer.py --joint-global-share``)."""
TYPE_RATIO_ITERATIONS = 3
"""Passes of :func:`type_ratios` that divide a mixed cluster's query cells among its types."""
JOINT_MAX_QUERY_CELLS = 10_000
JOINT_MIN_CLUSTER_CELLS = 50
"""Sampled cells of each query cluster at least (all of a smaller one), so that a rare cluster of a
large query - a rare type the reference lacks - still gets the co-clustering evidence."""
"""A larger query enters the joint clustering as a random sample of this many of its cells, and
each of its clusters takes the mean score of its sampled cells. The joint Leiden (exact
neighbours) took 31 s for the bone-marrow section's 84,518 cells plus the pbmc3k reference (load
2.8; it grows with the square of the cells, so a million-cell run could not afford it); a type
with 1% of the query still puts ~100 cells into the sample."""


def type_ratios(n_query: np.ndarray, by_type: np.ndarray, iterations: int = TYPE_RATIO_ITERATIONS) -> np.ndarray:
    """Per reference type ``t``: the typical ratio ``rho_t`` of query to reference cells where ``t``'s
    reference cells lie.

    ``n_query``: query cells per joint cluster; ``by_type``: clusters x types, reference cells of
    each type. Start from each cluster's own ratio ``q_c / r_c``; ``rho_t`` is the median of the
    clusters' ratios weighted by ``t``'s reference cells in them (where most of ``t``'s reference
    cells lie: a missing type's query cells that fall among a few of them carry little weight).
    Then, for mixed clusters, each pass divides a cluster's query cells among its types in
    proportion to ``rho_t r_c(t)`` and takes the weighted median of ``t``'s share over its reference
    cells again. A type with no reference cell in any cluster with a ratio gets NaN."""
    by_type = np.asarray(by_type, dtype=np.float64)
    n_query = np.asarray(n_query, dtype=np.float64)
    n_ref = by_type.sum(axis=1)
    rho = np.full(by_type.shape[1], np.nan)
    ok = n_ref > 0
    if not ok.any():
        return rho
    ratio = np.where(ok, n_query / np.where(ok, n_ref, 1.0), np.nan)
    per_type = np.repeat(ratio[:, None], by_type.shape[1], axis=1)  # each type's ratio in each cluster
    for it in range(iterations + 1):
        for t in range(by_type.shape[1]):
            w = by_type[ok, t]
            if w.sum() > 0:
                rho[t] = _weighted_median(per_type[ok, t], w)
        if it == iterations:
            break
        expected = by_type * np.nan_to_num(rho, nan=0.0)[None, :]  # query cells each type would put there
        total = expected.sum(axis=1, keepdims=True)
        share = np.divide(expected, total, out=np.zeros_like(expected), where=total > 0)
        per_type = np.divide(share * n_query[:, None], by_type, out=np.full_like(expected, np.nan), where=by_type > 0)
    return rho


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    c = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(c / c[-1], 0.5)])


def joint_cluster_table(query_counts, reference_counts, clusters=None, *,
                        reference_labels=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per joint cluster (``JOINT_COLUMNS``) and each query cell's joint cluster.

    ``query_counts`` / ``reference_counts``: cells x the same shared genes (counts or
    log-normalised values). ``clusters``: joint cluster ids for the stacked reference then query
    cells (None: Leiden on the stacked counts). ``DataFrame.attrs['typical_share']``: ``s``.
    With ``reference_labels`` (the default call) a cluster must also be short of reference cells
    against the share its own reference cells' types predict (module doc: composition-robust);
    its ``p_value`` is the larger of the two tests'.
    """
    from scipy.stats import binom

    n_ref = reference_counts.shape[0]
    if clusters is None:
        from .fit_report import leiden_clusters

        stacked = sp.vstack([sp.csr_matrix(reference_counts), sp.csr_matrix(query_counts)]).tocsr()
        clusters = leiden_clusters(stacked)
    cl = np.asarray(clusters, dtype=object)
    is_ref = np.arange(len(cl)) < n_ref
    g = pd.DataFrame({"cluster": cl, "ref": is_ref}).groupby("cluster", sort=True)["ref"].agg(["sum", "count"])
    n = g["count"].to_numpy(dtype=np.float64)
    nr = g["sum"].to_numpy(dtype=np.float64)
    share = nr / n
    nq = n - nr
    typical = 0.5
    if nq.sum() > 0:
        order = np.argsort(share, kind="stable")
        typical = float(share[order][np.searchsorted(np.cumsum(nq[order]) / nq.sum(), 0.5)])
    s = min(max(typical, 1e-6), 1.0 - 1e-6)
    p = np.clip(binom.cdf(nr, n, s) * len(g), 0.0, 1.0)
    columns = {"cluster": g.index.to_numpy(), "n_cells": n.astype(int), "n_reference": nr.astype(int),
               "reference_share": share}
    if reference_labels is not None:
        expected = _expected_share(cl[:n_ref], np.asarray(reference_labels, dtype=object), g.index, nq)
        p_type = np.clip(binom.cdf(nr, n, np.clip(expected, 1e-6, 1.0 - 1e-6)) * len(g), 0.0, 1.0)
        columns["expected_share"] = expected
        p = np.maximum(p, p_type)
    columns.update({"p_value": p, "score": 1.0 - p})
    table = pd.DataFrame(columns)
    table.attrs["typical_share"] = typical
    return table, cl[n_ref:]


def _expected_share(ref_clusters, ref_labels, index, n_query) -> np.ndarray:
    """Per joint cluster: the reference share its reference cells' types predict,
    ``r_c / (r_c + sum_t rho_t r_c(t))`` (:func:`type_ratios`); a cluster without reference cells
    takes the largest ``rho_t`` (the type most enriched in the query: the most lenient)."""
    by_type = pd.crosstab(pd.Series(ref_clusters, name="c"), pd.Series(ref_labels.astype(str), name="t"))
    by_type = by_type.reindex(index, fill_value=0).to_numpy(dtype=np.float64)
    rho = type_ratios(n_query, by_type)
    rho = np.nan_to_num(rho, nan=np.nanmax(rho) if np.isfinite(rho).any() else 1.0)
    r = by_type.sum(axis=1)
    expected_query = by_type @ rho
    lenient = float(rho.max()) if len(rho) else 1.0
    return np.where(r > 0, r / np.maximum(r + expected_query, 1e-12), 1.0 / (1.0 + lenient))


def _cluster_sample(labels: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted sample of ``rows`` (cells with cluster ``labels``): ``n`` at random, topped up to
    :data:`JOINT_MIN_CLUSTER_CELLS` per cluster (the few extra cells of rare clusters barely move
    the typical reference share, a median over the sampled query cells)."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(rows), dtype=bool)
    chosen[rng.choice(len(rows), n, replace=False)] = True
    for members in pd.Series(np.arange(len(rows))).groupby(labels).indices.values():
        members = np.asarray(members)
        short = JOINT_MIN_CLUSTER_CELLS - int(chosen[members].sum())
        if short > 0:
            free = members[~chosen[members]]
            chosen[rng.choice(free, min(short, len(free)), replace=False)] = True
    return rows[chosen]


def joint_enrichment(query_counts, reference_counts, clusters=None, *, query_clusters=None, reference_labels=None,
                     max_query: int = JOINT_MAX_QUERY_CELLS, seed: int = 0) -> np.ndarray:
    """Per query cell: the score of its joint reference + query cluster (``1 - p``, module doc).

    With ``query_clusters`` (the query's own clusters) and more than ``max_query`` query cells
    with a cluster, the joint clustering takes a random ``max_query`` of them (``seed``) plus,
    for a rare query cluster, enough of its cells to hold :data:`JOINT_MIN_CLUSTER_CELLS` (all
    of a smaller one); every query cell gets the mean score of the sampled cells of its query
    cluster (NaN for cells without a cluster)."""
    if not BY_TYPE:  # the sixth session's rule (benchmarks' --joint-global-share)
        reference_labels = None
    take = None
    if clusters is None and query_clusters is not None:
        own = pd.Series(np.asarray(query_clusters, dtype=object))
        valid = np.flatnonzero(own.notna().to_numpy())
        if len(valid) > max_query:
            take = _cluster_sample(own.iloc[valid].to_numpy(), valid, int(max_query), seed)
    table, qcl = joint_cluster_table(query_counts if take is None else query_counts[take], reference_counts, clusters,
                                     reference_labels=reference_labels)
    scores = pd.Series(table["score"].to_numpy(), index=table["cluster"].to_numpy()).reindex(qcl).to_numpy()
    if take is None:
        return scores.astype(np.float32)
    means = pd.Series(scores).groupby(own.iloc[take].to_numpy()).mean()
    return own.map(means).to_numpy(dtype=np.float32)
