"""Marker genes of clusters: Wilcoxon rank-sum of each cluster against the others.

``scanpy.tl.rank_genes_groups(method="wilcoxon", reference="rest")`` between the
clusters, on log-normalised expression of the clustered cells (raw counts - by the
one rule of :func:`~napari_cellama.core.counts.is_raw_counts` - are scaled to the median
total per cell and ``log1p``-ed; other input is taken as already log-normalised).
Clusters of one cell are left out of the test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    DEFAULT_NICHE_MARKERS,
    GENE,
    MARKER_COLUMNS,
    MARKER_LOGFC,
    MARKER_PCT_IN,
    MARKER_PCT_REST,
    MARKER_PVAL,
    MARKER_PVAL_ADJ,
    MARKER_SCORE,
    NICHE_CLUSTER,
)
from .counts import is_raw_counts


def log_normalize(x) -> sp.csr_matrix:
    """Log-normalised copy of a cells x genes matrix (see module docstring)."""
    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    if is_raw_counts(m):
        totals = np.asarray(m.sum(axis=1)).ravel()
        pos = totals > 0
        target = float(np.median(totals[pos])) if pos.any() else 1.0
        scale = np.zeros_like(totals)
        scale[pos] = target / totals[pos]
        m = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ m)
        np.log1p(m.data, out=m.data)
    return m


def niche_markers(x, gene_names: Sequence[str], clusters, *, n_markers: int = DEFAULT_NICHE_MARKERS) -> pd.DataFrame:
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



__all__ = ["log_normalize", "niche_markers"]
