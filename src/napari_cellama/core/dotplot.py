"""The marker dotplot table: reference markers over the query cells grouped by label (Qt-free).

The standard check of an annotation (scanpy's ``dotplot``): for each group of query cells
(its current label) and each marker gene of the reference types, the fraction of the
group's cells that express the gene (dot size) and the group's mean log-normalised
expression (``log1p`` of counts per 10,000 over the panel; dot colour). A correct label
lights up its own type's markers; a type painted over cells that lack its markers does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

DOT_COLUMNS = ("group", "gene", "fraction", "mean", "n_cells")


def dotplot_table(query, groups: pd.Series, genes: Sequence[str]) -> pd.DataFrame:
    """Fraction expressing and mean expression of ``genes`` per group (``DOT_COLUMNS``, long form).

    ``query``: AnnData of counts (cells x all panel genes); ``groups``: the group (label) of
    each cell, indexed by cell id (cells missing from ``query`` are ignored); ``genes``:
    the genes in plot order (genes the query lacks are left out). Groups are sorted by name.
    """
    from .classify import log_normalise

    groups = pd.Series(groups).astype(str)
    rows = query.obs_names.get_indexer(groups.index.astype(str))
    keep = rows >= 0
    rows, labels = rows[keep], groups.to_numpy()[keep]
    genes = [g for g in dict.fromkeys(str(g) for g in genes)]
    cols = query.var_names.get_indexer(genes)
    genes = [g for g, c in zip(genes, cols, strict=True) if c >= 0]
    cols = cols[cols >= 0]
    x = log_normalise(query.X[rows])[:, cols]
    codes, cats = pd.factorize(labels, sort=True)
    onehot = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(cats), len(codes)))
    n = np.asarray(onehot.sum(axis=1)).ravel()
    mean = np.asarray((onehot @ x).todense()) / np.maximum(n, 1)[:, None]
    frac = np.asarray((onehot @ (x > 0).astype(np.float64)).todense()) / np.maximum(n, 1)[:, None]
    out = pd.DataFrame({
        "group": np.repeat(np.asarray(cats, dtype=object), len(genes)),
        "gene": np.tile(np.asarray(genes, dtype=object), len(cats)),
        "fraction": frac.ravel(),
        "mean": mean.ravel(),
        "n_cells": np.repeat(n.astype(int), len(genes)),
    })
    return out


def marker_genes_in_order(markers: pd.DataFrame, types: Sequence[str] | None = None, per_type: int = 3) -> list[str]:
    """Marker genes for the dotplot's columns: the top ``per_type`` of each type, in type order."""
    types = sorted(markers["cell_type"].unique()) if types is None else [str(t) for t in types]
    genes: list[str] = []
    for t in types:
        genes += markers.loc[markers["cell_type"] == t].sort_values("rank")["gene"].head(per_type).tolist()
    return list(dict.fromkeys(genes))
