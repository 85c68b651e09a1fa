"""Reference fit report: how well the reference explains each cluster of the query.

Per query cluster - the run's own graph clusters when the query is a Xenium run that ships
``analysis/clustering/gene_expression_graphclust/clusters.csv``, else Leiden on the query's
expression (log-normalised, 30 principal components, 15-neighbour graph, resolution 1,
seed 0) - the report gives its size, the share of its cells called ``Unknown``, of
low-confidence cells (``confidence`` below 0.5) and of ``Unassigned`` cells, the dominant label
and its share, and the cluster's top marker genes (highest mean log-normalised expression in
the cluster minus that in the other cells, over genes detected in at least 10% of the
cluster's cells; all genes of the query, not only those the reference shares). Clusters in
which at least half of the cells are ``Unknown`` are listed as types possibly missing from the
reference: their markers say what they are. When the transfer's unknown score carried cluster
evidence (``TransferOptions.unknown_clusters``), the mean ``cluster_novelty`` of each cluster's
cells is a column too (1 - how well the cluster's markers match its best reference type), and a
cluster whose markers match no reference type (novelty >= 0.99) is listed as well; so are
``cluster_residual`` (how many times worse than the query's typical cluster the reference types
explain the cluster: what makes a cluster's cells Unknown under the query-relative call, 3.5 at
the default level; empty when the absolute call was used), ``profile_residual`` (the residual
itself) and ``unknown_call`` (which call was made, and why the absolute one where it was).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_FIT_REPORT_MARKERS,
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_MISSING_TYPE_SHARE,
    DEFAULT_NOVEL_CLUSTER,
    DEFAULT_RANDOM_STATE,
    UNASSIGNED,
    UNKNOWN,
)
from .cluster_evidence import CLUSTER_NOVELTY, CLUSTER_RESIDUAL, DETECTION_RATIO, PROFILE_RESIDUAL, UNKNOWN_CALL
from .co_clustering import JOINT_ENRICHMENT

FIT_CLUSTER = "cluster"
FIT_COLUMNS = ("cluster", "n_cells", "share_unknown", "share_low_confidence", "share_unassigned",
               "dominant_label", "dominant_share", "top_markers", "possibly_missing")
EVIDENCE_COLUMNS = (CLUSTER_NOVELTY, CLUSTER_RESIDUAL, DETECTION_RATIO, JOINT_ENRICHMENT, PROFILE_RESIDUAL, UNKNOWN_CALL)
"""Columns added when the transfer's unknown score carried cluster evidence: the cluster's marker
novelty, its residual ratio and its detection-deviance ratio to the query's typical cluster (the
query-relative call's evidence; empty under the absolute call), the mean over its cells of their
joint reference + query cluster's score (``joint_enrichment``, core/co_clustering.py; empty under
the absolute call) and its profile residual (placed
before ``top_markers``), and the
call made (``relative: ...``, ``absolute: <why>``, ``cell only: <why>``; last)."""
_MIN_DETECTED = 0.1


@dataclass
class FitReport:
    """One row per query cluster (``FIT_COLUMNS``) and where the clusters came from."""

    table: pd.DataFrame
    cluster_source: str
    low_confidence: float = DEFAULT_LOW_CONFIDENCE
    missing_share: float = DEFAULT_MISSING_TYPE_SHARE
    unknown_call: str = ""
    """How the transfer's Unknown call used the clusters (the table's ``unknown_call``; '' if not recorded)."""
    panel_resolution: object = None
    """:class:`~.panel_resolution.PanelResolution`: the pairs of reference types the shared panel does
    not tell apart (None: not computed - no ``reference`` given to :func:`reference_fit_report`)."""

    @property
    def relative(self) -> bool:
        """Whether the Unknown call was the query-relative one (``cluster_residual`` is its evidence)."""
        return self.unknown_call.startswith("relative")

    @property
    def possibly_missing(self) -> pd.DataFrame:
        """Clusters that are mostly Unknown: types possibly missing from the reference."""
        return self.table[self.table["possibly_missing"]]

    def summary(self, max_rows: int = 40) -> str:
        t = self.table
        lines = [f"reference fit per query cluster ({self.cluster_source}; low confidence < {self.low_confidence:g}):"]
        if self.unknown_call:
            lines.append(f"Unknown call: {self.unknown_call}")
        ev = CLUSTER_RESIDUAL in t
        head = f"{'cluster':>8} {'cells':>7} {'Unknown':>8} {'low conf':>8}"
        if ev:  # residual ratio (the relative call's evidence), profile residual, marker novelty
            head += f" {'ratio':>6} {'detect':>6} {'joint':>6} {'resid.':>6} {'novelty':>7}"
        lines.append(head + "  dominant label (share)  top markers")
        for _, r in t.head(max_rows).iterrows():
            row = (f"{r['cluster']!s:>8} {int(r['n_cells']):>7} {r['share_unknown']:>8.1%} "
                   f"{r['share_low_confidence']:>8.1%}")
            if ev:
                det = r[DETECTION_RATIO] if DETECTION_RATIO in t else np.nan
                joint = r[JOINT_ENRICHMENT] if JOINT_ENRICHMENT in t else np.nan
                row += (f" {_num(r[CLUSTER_RESIDUAL], 6)} {_num(det, 6)} {_num(joint, 6)} {_num(r[PROFILE_RESIDUAL], 6)}"
                        f" {_num(r[CLUSTER_NOVELTY], 7)}")
            lines.append(row + f"  {r['dominant_label']} ({r['dominant_share']:.0%})  {r['top_markers']}")
        if ev and not self.relative:
            lines.append("ratio: '-' - the absolute call was used (see the Unknown call line), so no cluster is "
                         "measured against the query's typical one")
        if len(t) > max_rows:
            lines.append(f"... {len(t) - max_rows} more clusters (see --fit-report)")
        miss = self.possibly_missing
        if len(miss):
            lines.append(f"types possibly missing from the reference (>= {self.missing_share:.0%} Unknown, or "
                         f"markers that match no reference type): "
                         + "; ".join(f"cluster {r['cluster']} ({int(r['n_cells'])} cells: {r['top_markers']})"
                                     for _, r in miss.iterrows()))
        else:
            lines.append(f"no cluster is mostly Unknown (>= {self.missing_share:.0%}): the reference covers every cluster")
        if self.panel_resolution is not None:
            lines.append(self.panel_resolution.summary())
        return "\n".join(lines)


def _num(value, width: int) -> str:
    return f"{'-':>{width}}" if pd.isna(value) else f"{float(value):>{width}.2f}"


def leiden_clusters(counts, resolution: float = 1.0, seed: int = DEFAULT_RANDOM_STATE) -> pd.Categorical:
    """Leiden clusters of cells from their expression (log-normalised, 30 PCs, 15 exact neighbours)."""
    import anndata as ad
    import scanpy as sc

    from .classify import log_normalise

    x = log_normalise(counts)
    a = ad.AnnData(X=x)
    n_pcs = max(1, min(30, a.n_obs - 1, a.n_vars - 1))
    sc.pp.pca(a, n_comps=n_pcs, random_state=seed)
    # exact neighbours (scikit-learn): scanpy's default approximate search for more than 4,096
    # cells fails with the installed scipy (csr_array has no getnnz) and is slower here
    sc.pp.neighbors(a, n_neighbors=max(2, min(15, a.n_obs - 1)), random_state=seed, transformer="sklearn")
    sc.tl.leiden(a, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return pd.Categorical(a.obs["leiden"].astype(str))


def cluster_markers(counts, genes, clusters, *, n_markers: int = DEFAULT_FIT_REPORT_MARKERS) -> dict:
    """Top ``n_markers`` genes per cluster (mean log-normalised expression in minus out)."""
    from .classify import log_normalise

    x = log_normalise(counts).tocsr()
    genes = np.asarray(genes, dtype=object)
    codes, cats = pd.factorize(pd.Series(np.asarray(clusters, dtype=object)), sort=True)
    onehot = sp.csr_matrix((np.ones(len(codes), np.float32), (codes, np.arange(len(codes)))),
                           shape=(len(cats), len(codes)))
    n = np.asarray(onehot.sum(axis=1)).ravel()
    sums = np.asarray((onehot @ x).todense())
    detected = np.asarray((onehot @ (x > 0).astype(np.float32)).todense())
    total = sums.sum(axis=0)
    out = {}
    for i, c in enumerate(cats):
        inside = sums[i] / max(n[i], 1)
        rest = (total - sums[i]) / max(len(codes) - n[i], 1)
        score = np.where(detected[i] / max(n[i], 1) >= _MIN_DETECTED, inside - rest, -np.inf)
        top = np.argsort(-score, kind="stable")[:n_markers]
        out[c] = [str(genes[j]) for j in top if np.isfinite(score[j])]
    return out


def reference_fit_report(table: pd.DataFrame, query, clusters=None, *,
                         low_confidence: float = DEFAULT_LOW_CONFIDENCE,
                         missing_share: float = DEFAULT_MISSING_TYPE_SHARE,
                         n_markers: int = DEFAULT_FIT_REPORT_MARKERS,
                         cluster_source: str | None = None, reference=None,
                         label_key: str | None = None) -> FitReport:
    """Fit report of a transfer ``table`` (rows: query cells) over ``query`` (AnnData, all its genes).

    ``clusters``: a Series of cluster ids indexed by cell id (e.g.
    :func:`napari_cellama.io.read_xenium_clusters`); None: Leiden on the query's expression.
    Cells of the table without a cluster are left out of the report.
    ``reference`` (AnnData, labels in ``obs[label_key]``): also report the pairs of reference
    types the shared panel does not tell apart (``FitReport.panel_resolution``,
    :func:`~.panel_resolution.reference_panel_resolution`; a few seconds).
    """
    cells = pd.Index(table.index)
    if clusters is None:
        sub = query[np.asarray(query.obs_names.get_indexer(cells))]
        labels = pd.Series(np.asarray(leiden_clusters(sub.X), dtype=object), index=cells)
        source = cluster_source or "Leiden on the query's expression"
    else:
        labels = pd.Series(clusters).astype(str).reindex(cells)
        source = cluster_source or f"query clusters '{getattr(clusters, 'name', None) or 'given'}'"
    keep = labels.notna().to_numpy()
    cells, labels = cells[keep], labels[keep]
    rows = query.obs_names.get_indexer(cells)
    markers = cluster_markers(query.X[rows], query.var_names, labels.to_numpy(), n_markers=n_markers)
    t = table.loc[cells]
    df = pd.DataFrame({
        FIT_CLUSTER: labels.to_numpy(),
        "unknown": (t[CELL_TYPE] == UNKNOWN).to_numpy(),
        "low": (t[CONFIDENCE] < low_confidence).to_numpy(),
        "unassigned": (t[CELL_TYPE] == UNASSIGNED).to_numpy(),
        "label": t[CELL_TYPE].astype(str).to_numpy(),
    })
    g = df.groupby(FIT_CLUSTER, sort=False)
    dominant = g["label"].agg(lambda s: s.value_counts().index[0])
    share = g["label"].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    out = pd.DataFrame({
        "n_cells": g.size(),
        "share_unknown": g["unknown"].mean(),
        "share_low_confidence": g["low"].mean(),
        "share_unassigned": g["unassigned"].mean(),
        "dominant_label": dominant,
        "dominant_share": share,
    })
    for col in EVIDENCE_COLUMNS[:-1]:  # the unknown score's cluster evidence
        if col in t:  # (core/cluster_evidence.py, core/unknown.py): one value per cluster
            out[col] = pd.Series(t[col].to_numpy(dtype=float), index=df.index).groupby(df[FIT_CLUSTER]).mean().round(4)
    call = ""
    if UNKNOWN_CALL in t:
        calls = pd.Series(t[UNKNOWN_CALL]).dropna().astype(str).unique()
        call = "; ".join(calls)
        if CLUSTER_NOVELTY in out:
            out[UNKNOWN_CALL] = call
    out["top_markers"] = [", ".join(markers.get(c, [])) for c in out.index]
    out["possibly_missing"] = out["share_unknown"] >= missing_share
    if CLUSTER_NOVELTY in out:
        out["possibly_missing"] |= out[CLUSTER_NOVELTY].fillna(0.0) >= DEFAULT_NOVEL_CLUSTER
    out = out.rename_axis(FIT_CLUSTER).reset_index()
    out = out.sort_values(["possibly_missing", "share_unknown", "n_cells"], ascending=[False, False, False],
                          kind="stable").reset_index(drop=True)
    cols = list(FIT_COLUMNS)
    at = cols.index("top_markers")
    cols[at:at] = [c for c in EVIDENCE_COLUMNS[:-1] if c in out]
    cols += [UNKNOWN_CALL] if UNKNOWN_CALL in out else []
    resolution = None
    if reference is not None:
        from .panel_resolution import reference_panel_resolution

        if label_key is None:
            raise ValueError("reference_fit_report: give label_key with reference (the obs column of its labels)")
        resolution = reference_panel_resolution(query, reference, label_key)
    return FitReport(out.loc[:, cols], source, low_confidence, missing_share, call, resolution)
