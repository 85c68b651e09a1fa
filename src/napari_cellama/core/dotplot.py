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


class Dotplot:
    """The query's log-normalised expression of some genes, prepared once; :meth:`table` then
    groups it by any labelling in milliseconds (the dotplot follows every edit)."""

    def __init__(self, query, genes: Sequence[str]):
        from .classify import log_normalise

        genes = [g for g in dict.fromkeys(str(g) for g in genes)]
        cols = query.var_names.get_indexer(genes)
        self.genes = [g for g, c in zip(genes, cols, strict=True) if c >= 0]
        # library sizes over the whole panel, then only the plotted genes are kept
        self._x = sp.csr_matrix(log_normalise(query.X)[:, cols[cols >= 0]])
        self._det = (self._x > 0).astype(np.float64)
        self._rows = pd.Index(query.obs_names.astype(str))

    def values(self, gene: str, cell_ids) -> np.ndarray:
        """Log-normalised expression of ``gene`` in ``cell_ids`` (0 for unknown cells)."""
        j = self.genes.index(str(gene))
        rows = self._rows.get_indexer(pd.Index(cell_ids).astype(str))
        col = np.asarray(self._x[:, j].todense()).ravel()
        return np.where(rows >= 0, col[np.maximum(rows, 0)], 0.0)

    def table(self, groups: pd.Series) -> pd.DataFrame:
        """``DOT_COLUMNS`` per (group, gene); ``groups``: label of each cell by cell id."""
        groups = pd.Series(groups).astype(str)
        rows = self._rows.get_indexer(groups.index.astype(str))
        keep = rows >= 0
        rows, labels = rows[keep], groups.to_numpy()[keep]
        codes, cats = pd.factorize(labels, sort=True)
        onehot = sp.csr_matrix((np.ones(len(codes)), (codes, rows)), shape=(len(cats), self._x.shape[0]))
        n = np.asarray(onehot.sum(axis=1)).ravel()
        mean = np.asarray((onehot @ self._x).todense()) / np.maximum(n, 1)[:, None]
        frac = np.asarray((onehot @ self._det).todense()) / np.maximum(n, 1)[:, None]
        g = len(self.genes)
        return pd.DataFrame({
            "group": np.repeat(np.asarray(cats, dtype=object), g),
            "gene": np.tile(np.asarray(self.genes, dtype=object), len(cats)),
            "fraction": frac.ravel(),
            "mean": mean.ravel(),
            "n_cells": np.repeat(n.astype(int), g),
        })


def dotplot_table(query, groups: pd.Series, genes: Sequence[str]) -> pd.DataFrame:
    """Fraction expressing and mean expression of ``genes`` per group (``DOT_COLUMNS``, long form).

    ``query``: AnnData of counts (cells x all panel genes); ``groups``: the group (label) of
    each cell, indexed by cell id (cells missing from ``query`` are ignored); ``genes``:
    the genes in plot order (genes the query lacks are left out). Groups are sorted by name.
    """
    return Dotplot(query, genes).table(groups)


def marker_genes_in_order(markers: pd.DataFrame, types: Sequence[str] | None = None, per_type: int = 3) -> list[str]:
    """Marker genes for the dotplot's columns: the top ``per_type`` of each type, in type order."""
    types = sorted(markers["cell_type"].unique()) if types is None else [str(t) for t in types]
    genes: list[str] = []
    for t in types:
        genes += markers.loc[markers["cell_type"] == t].sort_values("rank")["gene"].head(per_type).tolist()
    return list(dict.fromkeys(genes))
