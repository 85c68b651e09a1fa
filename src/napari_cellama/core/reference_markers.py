"""Marker genes of each reference type, computed once per transfer (Qt-free).

Like scanpy's ``rank_genes_groups`` (t-test on log-normalised expression, one type against
all other reference cells), restricted to the genes the query measures (a marker the panel
lacks cannot be checked in a query cell) and required to be *specific*: detected in at
least ``min_fraction`` of the type's cells and at least ``min_fold`` times as often as in
the other cells. Ribosomal (``RPL``/``RPS``/``MRPL``/``MRPS``) and mitochondrial (``MT-``)
genes are never markers: they rank high in every type and say nothing about identity.

:func:`marker_check` then says, for one query cell, which markers of its label and of the
runner-up it expresses (counts), so a wrong call is visible at a glance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

MARKER_COLUMNS = ("cell_type", "rank", "gene", "score", "fraction_in", "fraction_out", "mean_in")
DEFAULT_MARKERS_PER_TYPE = 5
DEFAULT_MIN_FRACTION = 0.25
DEFAULT_MIN_FOLD = 1.5
_EXCLUDED = re.compile(r"^(RPL|RPS|MRPL|MRPS|MT-)", re.IGNORECASE)


def is_housekeeping(gene: str) -> bool:
    """True for ribosomal (RPL/RPS/MRPL/MRPS) and mitochondrial (MT-) genes."""
    return bool(_EXCLUDED.match(str(gene)))


def reference_markers(reference, labels: pd.Series, genes: Sequence[str] | None = None, *,
                      n_markers: int = DEFAULT_MARKERS_PER_TYPE, min_fraction: float = DEFAULT_MIN_FRACTION,
                      min_fold: float = DEFAULT_MIN_FOLD) -> pd.DataFrame:
    """Top ``n_markers`` specific genes per type of ``labels`` (``MARKER_COLUMNS``, ranked).

    ``reference``: AnnData of raw counts (all its genes: library sizes use every gene);
    ``labels``: the type of each reference cell, indexed by reference cell id (cells not in
    ``labels`` are left out; ``TransferResult.reference_labels`` is such a Series);
    ``genes``: the genes markers may be chosen from (the shared panel), default all.
    """
    from .classify import log_normalise

    labels = pd.Series(labels).astype(str)
    rows = reference.obs_names.get_indexer(labels.index.astype(str))
    keep = rows >= 0
    rows, labels = rows[keep], labels[keep]
    x = log_normalise(reference.X[rows])
    names = np.asarray(reference.var_names, dtype=object).astype(str)
    allowed = np.ones(len(names), bool) if genes is None else np.isin(names, np.asarray(list(genes), dtype=str))
    allowed &= ~np.array([is_housekeeping(g) for g in names], bool)
    cols = np.flatnonzero(allowed)
    x = sp.csr_matrix(x)[:, cols]
    names = names[cols]
    codes, cats = pd.factorize(labels.to_numpy(), sort=True)
    onehot = sp.csr_matrix((np.ones(len(codes), np.float64), (codes, np.arange(len(codes)))),
                           shape=(len(cats), len(codes)))
    n = np.asarray(onehot.sum(axis=1)).ravel()
    n_all = len(codes)
    s1 = np.asarray((onehot @ x).todense())
    s2 = np.asarray((onehot @ x.multiply(x)).todense())
    det = np.asarray((onehot @ (x > 0).astype(np.float64)).todense())
    t1, t2, tdet = s1.sum(0), s2.sum(0), det.sum(0)
    out = []
    for i, cell_type in enumerate(cats):
        n_in, n_out = max(n[i], 1), max(n_all - n[i], 1)
        mean_in, mean_out = s1[i] / n_in, (t1 - s1[i]) / n_out
        var_in = np.maximum(s2[i] / n_in - mean_in**2, 0)
        var_out = np.maximum((t2 - s2[i]) / n_out - mean_out**2, 0)
        score = (mean_in - mean_out) / np.sqrt(var_in / n_in + var_out / n_out + 1e-9)
        f_in, f_out = det[i] / n_in, (tdet - det[i]) / n_out
        ok = (f_in >= min_fraction) & (f_in >= min_fold * f_out) & (mean_in > mean_out)
        order = [j for j in np.argsort(-score, kind="stable") if ok[j]][:n_markers]
        for rank, j in enumerate(order, 1):
            out.append((str(cell_type), rank, str(names[j]), float(score[j]), float(f_in[j]), float(f_out[j]),
                        float(mean_in[j])))
    return pd.DataFrame(out, columns=list(MARKER_COLUMNS))


def markers_of(markers: pd.DataFrame, cell_type: str) -> list[str]:
    """The ranked marker genes of ``cell_type`` (empty when it has none, e.g. Unknown)."""
    return markers.loc[markers["cell_type"] == str(cell_type), "gene"].tolist()


def marker_check(markers: pd.DataFrame, cell_counts: pd.Series, cell_types: Sequence[str]) -> pd.DataFrame:
    """Which markers of each of ``cell_types`` one cell expresses.

    ``cell_counts``: the cell's counts by gene (genes it lacks count 0). One row per
    (type, marker): ``cell_type``, ``gene``, ``counts``, ``detected`` (counts > 0) and the
    marker's ``fraction_in`` (how often the reference type expresses it).
    """
    rows = []
    for t in dict.fromkeys(str(c) for c in cell_types if c is not None and str(c) != ""):
        sub = markers[markers["cell_type"] == t]
        for _, r in sub.iterrows():
            c = float(cell_counts.get(r["gene"], 0.0))
            rows.append((t, r["gene"], c, c > 0, float(r["fraction_in"])))
    return pd.DataFrame(rows, columns=["cell_type", "gene", "counts", "detected", "fraction_in"])


def marker_summary(check: pd.DataFrame) -> dict:
    """``{type: "detected of markers"}`` text per type of a :func:`marker_check` table."""
    return {t: f"{int(g['detected'].sum())} of {len(g)}" for t, g in check.groupby("cell_type", sort=False)}
