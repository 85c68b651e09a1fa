"""Marker genes of clusters: Wilcoxon rank-sum of each cluster against the others.

``scanpy.tl.rank_genes_groups(method="wilcoxon", reference="rest")`` between the
clusters, on log-normalised expression of the clustered cells (raw counts - by the
one rule of :func:`~napari_cellama.core.counts.is_raw_counts` - are scaled to the median
total per cell and ``log1p``-ed; other input is taken as already log-normalised).
Clusters of one cell are left out of the test.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    DEFAULT_NICHE_MARKERS,
    GENE,
    MARKER_COLUMNS,
    MARKER_LOGFC,
    MARKER_MIN_LOGFC,
    MARKER_MIN_PCT_DIFF,
    MARKER_PCT_IN,
    MARKER_PCT_REST,
    MARKER_PVAL,
    MARKER_PVAL_ADJ,
    MARKER_SCORE,
    NICHE_CLUSTER,
)
from .counts import is_raw_counts

# ribosomal proteins (RPL*/RPS*, RPLP*, RPSA; mitochondrial MRPL*/MRPS*) and mitochondrial
# genome genes (MT-*): high and variable in every cell, never markers of a type
_RIBO_MITO = re.compile(r"^(M?RP[LS]\d+[A-Z]?\d*$|RPLP\d$|RPSA$|MT-)", re.IGNORECASE)


def is_ribo_mito(genes) -> np.ndarray:
    """Boolean mask of ribosomal (``RPL``/``RPS``/``MRPL``/``MRPS``) and mitochondrial (``MT-``)
    gene symbols (any case), which are never reported as markers."""
    return np.array([bool(_RIBO_MITO.match(str(g).strip())) for g in genes], dtype=bool)


def specific_markers(ranked: pd.DataFrame, n_markers: int, *, min_pct_diff: float = MARKER_MIN_PCT_DIFF,
                     min_logfc: float = MARKER_MIN_LOGFC) -> list[str]:
    """The first ``n_markers`` genes of one group's ranked table that a biologist would call markers.

    ``ranked`` has columns ``names``, ``scores``, ``logfoldchanges``, ``pct_in`` and ``pct_rest``
    in rank order (``rank_genes_groups`` with ``pts=True``). Kept: positive score, not
    ribosomal / mitochondrial (:func:`is_ribo_mito`), detected in at least ``min_pct_diff``
    more of the group's cells than of the rest, and a log2 fold change of at least ``min_logfc``.
    """
    keep = (
        (ranked["scores"].to_numpy(dtype=float) > 0)
        & ~is_ribo_mito(ranked["names"])
        & ((ranked["pct_in"].to_numpy(dtype=float) - ranked["pct_rest"].to_numpy(dtype=float)) >= min_pct_diff)
        & (np.nan_to_num(ranked["logfoldchanges"].to_numpy(dtype=float), nan=-np.inf) >= min_logfc)
    )
    return ranked["names"].astype(str)[keep].head(int(n_markers)).tolist()


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



__all__ = ["is_ribo_mito", "log_normalize", "niche_markers", "specific_markers"]
