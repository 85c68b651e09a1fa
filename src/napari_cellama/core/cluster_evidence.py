"""Cluster-level evidence for Unknown: does a query cluster's marker profile match a reference type?

A single cell of a type the reference lacks often sits inside the spread of a related present
type (NK cells left out of the reference look like CD8 T cells one by one), but a *cluster* of
such cells has a marker profile no reference type has. Per query cluster (the Xenium run's
graph clusters, or Leiden on the query's expression, :func:`~.fit_report.leiden_clusters`):

* its contrast: mean log-normalised expression in the cluster minus that in the rest of the
  query, per shared gene;
* each reference type's contrast: its mean minus that of the reference's other cells;
* ``match``: the highest Pearson correlation of the cluster's contrast with a type's contrast,
  over the union of the ``n_genes`` most up-regulated genes of each (``best_match``: that type).

Contrasts within each dataset cancel a gene's overall capture efficiency, so the match compares
*which genes mark the cluster* rather than absolute levels. ``cluster_novelty = 1 - match``
(clipped to 0..1) is given to every cell of the cluster; the fit report flags clusters whose
markers match no type.

:func:`cluster_residual` measures how badly a non-negative mix of the reference types' mean
profiles explains a cluster's mean profile. The unknown score (:func:`.unknown.with_cluster_evidence`)
divides it by the query's typical cluster's residual (query-relative: a donor or protocol shift
raises every cluster's residual and cancels), and falls back to the novelty where no part of
the query is explained well. :func:`cluster_detection` asks the same of the cluster's cells'
*detections*: a mean profile can be matched by a mix of other types (NK cells as CD8 T plus
monocytes) where the genes each cell detects cannot (no CD3E); its ratio to the query's typical
cluster counts beside the residual's.

Measured (docs/quality.md, ``benchmarks/quality_transfer.py --only b1,b2,b3`` and ``--only b4``):
within pbmc3k a left-out type's cluster has 4.0-8.4 times the typical residual, present types'
clusters 0.9-1.3; across donors (pbmc3k -> pbmc68k) every present cluster stays below 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

DEFAULT_CLUSTER_GENES = 30
"""Most up-regulated genes of a cluster and of a type whose union the match is computed on."""

CLUSTER_NOVELTY = "cluster_novelty"
CLUSTER_MATCH_COLUMNS = ("cluster", "n_cells", "best_match", "match")
CLUSTER_RESIDUAL = "cluster_residual"
"""Table column: the query cluster's profile residual (:func:`cluster_residual`) divided by the
query's typical cluster's (its cell-weighted median): how much worse than the rest of the
query the reference types explain it (1 or less: as well as a typical cluster)."""
PROFILE_RESIDUAL = "profile_residual"
"""Table column: the query cluster's profile residual itself (:func:`cluster_residual`, 0..1)."""
DETECTION_RATIO = "detection_ratio"
"""Table column: the query cluster's detection deviance (:func:`cluster_detection`) divided by the
query's typical cluster's: how much worse than the rest of the query the detection pattern
expected from the cluster's reference-type mix fits it (NaN under the absolute call)."""
UNKNOWN_CALL = "unknown_call"
"""Table column (one value per transfer): ``relative: ...`` (the query-relative call),
``absolute: <why>`` (no shift could be measured) or ``cell only: <why>`` (no cluster evidence)."""


def _group_sums(x, groups) -> tuple[list, np.ndarray, np.ndarray]:
    from .classify import log_normalise

    g = np.asarray(groups, dtype=object)
    cats = list(pd.unique(g))
    codes = pd.Categorical(g, categories=cats).codes
    onehot = sp.csr_matrix((np.ones(len(g), np.float64), (codes, np.arange(len(g)))), shape=(len(cats), len(g)))
    sums = np.asarray((onehot @ log_normalise(x)).todense(), dtype=np.float64)
    return cats, sums, np.asarray(onehot.sum(axis=1), dtype=np.float64).ravel()


def _contrasts(sums: np.ndarray, n: np.ndarray) -> np.ndarray:
    total, n_all = sums.sum(axis=0), n.sum()
    rest = np.maximum(n_all - n, 1.0)[:, None]
    return sums / np.maximum(n, 1.0)[:, None] - (total - sums) / rest


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else 0.0


def cluster_match(query_counts, clusters, reference, *, n_genes: int = DEFAULT_CLUSTER_GENES) -> pd.DataFrame:
    """Per query cluster: ``n_cells``, the reference type whose markers it matches best and the match.

    ``query_counts``: cells x shared genes; ``clusters``: one id per query cell;
    ``reference``: ``(counts, labels)`` on the same genes in the same order.
    """
    ref_counts, ref_labels = reference
    cats, sums, n = _group_sums(query_counts, clusters)
    types, rsums, rn = _group_sums(ref_counts, np.asarray(ref_labels).astype(str))
    qc, rc = _contrasts(sums, n), _contrasts(rsums, rn)
    k = max(2, min(int(n_genes), qc.shape[1]))
    rtop = [np.argsort(-rc[j], kind="stable")[:k] for j in range(len(types))]
    rows = []
    for i, c in enumerate(cats):
        qtop = np.argsort(-qc[i], kind="stable")[:k]
        corr = [_corr(qc[i, idx], rc[j, idx]) for j in range(len(types))
                for idx in (np.union1d(qtop, rtop[j]),)]
        best = int(np.argmax(corr)) if corr else 0
        rows.append((c, int(n[i]), types[best] if types else "", float(corr[best]) if corr else 0.0))
    return pd.DataFrame(rows, columns=list(CLUSTER_MATCH_COLUMNS))


def cluster_novelty(query_counts, clusters, reference, *, n_genes: int = DEFAULT_CLUSTER_GENES) -> np.ndarray:
    """Per query cell: ``1 - match`` of its cluster (clipped to 0..1; see :func:`cluster_match`)."""
    m = cluster_match(query_counts, clusters, reference, n_genes=n_genes)
    novelty = pd.Series(np.clip(1.0 - m["match"].to_numpy(), 0.0, 1.0), index=m["cluster"].to_numpy())
    return novelty.reindex(np.asarray(clusters, dtype=object)).to_numpy(dtype=np.float32)


def cluster_residual(query_counts, clusters, reference, *, n_genes: int = DEFAULT_CLUSTER_GENES) -> pd.DataFrame:
    """Per query cluster: how badly a non-negative mix of the reference types' profiles explains it.

    Profiles are mean log-normalised expression over the union of each reference type's
    ``n_genes`` most up-regulated genes (type mean minus the reference's mean); the cluster's
    profile ``q`` is fitted by non-negative least squares on the types' profiles and
    ``residual = |q - fit| / |q|`` (0: a mix of reference types; near 1: none of them; NaN: a
    cluster with no counts on those genes). A cluster of a present type - or a mix of present
    types, such as a cluster of naive and memory T cells - has a small residual; a cluster of a
    type the reference lacks a large one. Columns ``cluster``, ``n_cells``, ``residual``;
    ``DataFrame.attrs['n_genes']``: how many genes the profiles use.
    """
    from scipy.optimize import nnls

    ref_counts, ref_labels = reference
    cats, sums, n = _group_sums(query_counts, clusters)
    _, rmean, genes = _type_profiles(ref_counts, ref_labels, n_genes)
    basis = rmean[:, genes].T
    rows = []
    for i, c in enumerate(cats):
        q = sums[i, genes] / max(n[i], 1.0)
        norm = float(np.linalg.norm(q))
        res = float(nnls(basis, q)[1]) / norm if norm > 0 else np.nan
        rows.append((c, int(n[i]), res))
    out = pd.DataFrame(rows, columns=["cluster", "n_cells", "residual"])
    out.attrs["n_genes"] = int(len(genes))
    return out


def _type_profiles(ref_counts, ref_labels, n_genes: int):
    """Reference types, their mean log-normalised profiles and the union of their top genes."""
    types, rsums, rn = _group_sums(ref_counts, np.asarray(ref_labels).astype(str))
    rmean = rsums / np.maximum(rn, 1.0)[:, None]
    overall = rsums.sum(axis=0) / max(rn.sum(), 1.0)
    k = max(1, min(int(n_genes), rmean.shape[1]))
    genes = np.unique(np.concatenate([np.argsort(-(rmean[j] - overall), kind="stable")[:k]
                                      for j in range(len(types))]))
    return types, rmean, genes


def _detection_models(ref_counts, ref_labels, types, raw: bool):
    """Per type: ``(rate, scale, fraction)``: its counts per unit depth per gene, the factor that
    turns the Poisson detection ``1 - exp(-depth * rate)`` into the type's observed detection
    fraction on average over its reference cells (dispersion), and that fraction."""
    x = sp.csr_matrix(ref_counts, dtype=np.float64)
    y = np.asarray(ref_labels).astype(str)
    depth = np.asarray(x.sum(axis=1)).ravel()
    out = []
    for t in types:
        m = np.flatnonzero(y == t)
        xt = x[m]
        frac = np.asarray((xt > 0).mean(axis=0)).ravel()
        if not raw:
            out.append((None, None, frac))
            continue
        rate = np.asarray(xt.sum(axis=0)).ravel() / max(depth[m].sum(), 1e-12)
        expected = np.zeros_like(rate)
        for s0 in range(0, len(m), 2048):
            expected += (1.0 - np.exp(-np.outer(depth[m[s0:s0 + 2048]], rate))).sum(axis=0)
        expected /= max(len(m), 1)
        out.append((rate, np.divide(frac, expected, out=np.zeros_like(frac), where=expected > 0), frac))
    return out


def cluster_detection(query_counts, clusters, reference, *, n_genes: int = DEFAULT_CLUSTER_GENES) -> pd.DataFrame:
    """Per query cluster: how badly its cells' *detection pattern* fits that of its reference-type mix.

    The mix is the one :func:`cluster_residual` fits to the cluster's mean profile (non-negative
    least squares on the types' mean profiles; weights normalised to 1). Each cell's expected
    probability of detecting each shared gene is the mix of the types' probabilities at the
    cell's own depth (Poisson ``1 - exp(-depth x rate)`` of the type, scaled to the type's observed
    detection fraction in the reference; for input without counts the types' detection
    fractions). The cluster's statistic is the binomial deviance of its observed detections per
    gene against the expected ones, minus its expectation under the model (one per gene), per
    cell (``deviance``; 0 when the model holds). A cluster that lacks genes its types detect, or
    detects genes they lack - NK cells called CD8 T without CD3E, the B cells of a reference without
    B called T cells - deviates on every one of its cells, where a mean profile can be matched by
    a mix of other types. Columns ``cluster``, ``n_cells``, ``deviance``.
    """
    from scipy.optimize import nnls

    from .counts import is_raw_counts

    ref_counts, ref_labels = reference
    qx = sp.csr_matrix(query_counts)
    raw = bool(is_raw_counts(qx) and is_raw_counts(sp.csr_matrix(ref_counts)))
    types, rmean, genes = _type_profiles(ref_counts, ref_labels, n_genes)
    models = _detection_models(ref_counts, ref_labels, types, raw)
    cats, sums, n = _group_sums(qx, clusters)
    depth = np.asarray(qx.sum(axis=1), dtype=np.float64).ravel()
    detected = (qx > 0).astype(np.float64).tocsr()
    cl = np.asarray(clusters, dtype=object)
    basis = rmean[:, genes].T
    rows_out = []
    for i, c in enumerate(cats):
        rows = np.flatnonzero(cl == c)
        q = sums[i, genes] / max(n[i], 1.0)
        w = nnls(basis, q)[0] if np.linalg.norm(q) > 0 else np.zeros(len(types))
        if w.sum() <= 0 or not len(rows):
            rows_out.append((c, len(rows), np.nan))
            continue
        w = w / w.sum()
        expected = np.zeros(qx.shape[1])
        for j in np.flatnonzero(w > 0):
            rate, scale, frac = models[j]
            if rate is None:
                expected += w[j] * frac * len(rows)
            else:
                p = np.clip((1.0 - np.exp(-np.outer(depth[rows], rate))) * scale, 0.0, 1.0)
                expected += w[j] * p.sum(axis=0)
        m = float(len(rows))
        e = np.clip(expected, 1e-4 * m, (1 - 1e-4) * m)
        o = np.asarray(detected[rows].sum(axis=0)).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(o > 0, o * np.log(o / e), 0.0)
            b = np.where(m - o > 0, (m - o) * np.log((m - o) / (m - e)), 0.0)
        dev = 2.0 * (a + b)
        rows_out.append((c, len(rows), max(float(dev.sum()) - len(dev), 0.0) / m))
    return pd.DataFrame(rows_out, columns=["cluster", "n_cells", "deviance"])
