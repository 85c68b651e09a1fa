"""Can the panel support the annotation? Marker coverage of each reference type (Qt-free).

Before anything is embedded, the load widget shows the shared-panel report
(:func:`napari_cellama.core.shared_panel`) and, for every reference cell type, how many of
its top marker genes the spatial panel measures. A type whose markers are mostly missing
can only be recognised by weaker genes, so its transferred labels deserve less trust.

Markers are ranked as a biologist would: ``scanpy.tl.rank_genes_groups`` (Wilcoxon, one
type against all others) on log-normalised reference values (counts are normalised to
10,000 per cell and ``log1p``-transformed first; data that are already log-normalised are
used as they are), keeping in rank order only *specific* genes
(:func:`napari_cellama.core.markers.specific_markers`): a positive score, detected in at
least :data:`~napari_cellama._constants.MARKER_MIN_PCT_DIFF` more of the type's cells than of
the others, a log2 fold change of at least :data:`~napari_cellama._constants.MARKER_MIN_LOGFC`,
and never a ribosomal (``RPL``/``RPS``/``MRPL``/``MRPS``) or mitochondrial (``MT-``) gene, which
are abundant in every cell and would otherwise top the list of a type with few other
differences. :func:`coverage_text` writes a row as the load dock shows it
(``Naive CD4 T: 4/10 present: CCR7, SELL, LEF1, CD3E; missing: ...``). Types with more than
:data:`MAX_COVERAGE_CELLS_PER_TYPE` cells are subsampled (fixed seed) for speed; types with
fewer than 2 cells cannot be tested and are flagged.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    DEFAULT_COVERAGE_MARKERS,
    DEFAULT_RANDOM_STATE,
    LOW_MARKER_COVERAGE,
    MAX_COVERAGE_CELLS_PER_TYPE,
    MAX_LABEL_CATEGORIES,
    STAGE_COVERAGE,
)
from ..validators import check_label_key, check_positive_int
from ._progress import run
from .counts import is_raw_counts
from .markers import specific_markers
from .panel import normalise_symbol

COVERAGE_COLUMNS = (
    "cell_type",
    "n_cells",
    "n_markers",
    "n_in_panel",
    "fraction",
    "low_coverage",
    "markers_in_panel",
    "markers_missing",
)
"""Columns of the table returned by :func:`marker_coverage` (one row per reference type)."""


def label_columns(obs: pd.DataFrame, max_categories: int = MAX_LABEL_CATEGORIES) -> list[str]:
    """``obs`` columns that can serve as cell-type labels (categorical-like), best first.

    Categorical, string, boolean and integer columns with 2 to ``max_categories`` distinct
    values (and fewer distinct values than half the cells, so that ids and counts are
    excluded). Floats are never offered. Categorical columns come first, then the rest,
    each in ``obs`` order.
    """
    cats, others = [], []
    n = len(obs)
    for col in obs.columns:
        s = obs[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            k = s.nunique(dropna=True)
            if 2 <= k <= max_categories:
                cats.append(str(col))
            continue
        if pd.api.types.is_float_dtype(s.dtype):
            continue
        if not (
            pd.api.types.is_bool_dtype(s.dtype)
            or pd.api.types.is_integer_dtype(s.dtype)
            or pd.api.types.is_object_dtype(s.dtype)
            or pd.api.types.is_string_dtype(s.dtype)
        ):
            continue
        k = s.nunique(dropna=True)
        if 2 <= k <= max_categories and (k <= n / 2 or n < 4):
            others.append(str(col))
    return cats + others


def marker_coverage(
    reference,
    label_key: str,
    panel_genes,
    n_markers: int = DEFAULT_COVERAGE_MARKERS,
    low: float = LOW_MARKER_COVERAGE,
) -> pd.DataFrame:
    """Per reference type: its top ``n_markers`` markers and how many the panel measures.

    Returns a DataFrame with :data:`COVERAGE_COLUMNS` (``fraction`` = ``n_in_panel /
    n_markers``; ``low_coverage`` when it is below ``low`` or the type could not be tested),
    sorted by fraction, lowest first. Gene symbols are matched case-insensitively.
    """
    return run(iter_marker_coverage(reference, label_key, panel_genes, n_markers, low))


def iter_marker_coverage(
    reference,
    label_key: str,
    panel_genes,
    n_markers: int = DEFAULT_COVERAGE_MARKERS,
    low: float = LOW_MARKER_COVERAGE,
) -> Iterator:
    """Generator version of :func:`marker_coverage`, yielding ``(stage, done, total)``."""
    import anndata as ad
    import scanpy as sc

    check_label_key(reference, label_key)
    n_markers = check_positive_int(n_markers, "the number of marker genes per type")
    yield (STAGE_COVERAGE, 0, 3)
    labels = reference.obs[label_key]
    keep = labels.notna().to_numpy()
    labels = labels[keep].astype(str)
    rng = np.random.default_rng(DEFAULT_RANDOM_STATE)
    rows = []
    for idx in labels.groupby(labels, sort=True).indices.values():
        if len(idx) > MAX_COVERAGE_CELLS_PER_TYPE:
            idx = np.sort(rng.choice(idx, MAX_COVERAGE_CELLS_PER_TYPE, replace=False))
        rows.append(idx)
    sel = np.sort(np.concatenate(rows)) if rows else np.array([], dtype=int)
    x = reference.X[np.flatnonzero(keep)[sel]]
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    sub_labels = labels.iloc[sel].to_numpy()
    counts = pd.Series(labels).value_counts()
    testable = [t for t in sorted(counts.index) if (sub_labels == t).sum() >= 2]
    genes = pd.Index(reference.var_names.astype(str))
    markers: dict[str, list[str]] = {}
    if len(testable) >= 2:
        tmp = ad.AnnData(
            X=x,
            obs=pd.DataFrame(
                {"t": pd.Categorical(sub_labels)}, index=np.arange(len(sel)).astype(str)
            ),
        )
        tmp.var_names = genes
        tmp.var_names_make_unique()
        if is_raw_counts(tmp.X):
            sc.pp.normalize_total(tmp, target_sum=1e4)
            sc.pp.log1p(tmp)
        mask = tmp.obs["t"].isin(testable).to_numpy()
        tmp = tmp[mask].copy()
        tmp.obs["t"] = tmp.obs["t"].cat.remove_unused_categories()
        yield (STAGE_COVERAGE, 1, 3)
        sc.tl.rank_genes_groups(
            tmp,
            "t",
            method="wilcoxon",
            n_genes=tmp.n_vars,
            use_raw=False,
            tie_correct=False,
            pts=True,
        )
        res = tmp.uns["rank_genes_groups"]
        for t in testable:
            names = pd.Series(res["names"][t]).astype(str)
            ranked = pd.DataFrame({
                "names": names,
                "scores": pd.Series(res["scores"][t]).astype(float),
                "logfoldchanges": pd.Series(res["logfoldchanges"][t]).astype(float),
                "pct_in": res["pts"][t].reindex(names).to_numpy(),
                "pct_rest": res["pts_rest"][t].reindex(names).to_numpy(),
            })
            markers[t] = specific_markers(ranked, n_markers)
    yield (STAGE_COVERAGE, 2, 3)
    panel = set(normalise_symbol(panel_genes))
    out = []
    for t in sorted(counts.index):
        m = markers.get(t)
        if m is None:
            out.append(
                {
                    "cell_type": t,
                    "n_cells": int(counts[t]),
                    "n_markers": 0,
                    "n_in_panel": 0,
                    "fraction": float("nan"),
                    "low_coverage": True,
                    "markers_in_panel": [],
                    "markers_missing": [],
                }
            )
            continue
        keys = normalise_symbol(m)
        inside = [g for g, k in zip(m, keys) if k in panel]
        missing = [g for g, k in zip(m, keys) if k not in panel]
        frac = len(inside) / len(m) if m else float("nan")
        out.append(
            {
                "cell_type": t,
                "n_cells": int(counts[t]),
                "n_markers": len(m),
                "n_in_panel": len(inside),
                "fraction": frac,
                "low_coverage": bool(not m or frac < low),
                "markers_in_panel": inside,
                "markers_missing": missing,
            }
        )
    table = pd.DataFrame(out, columns=list(COVERAGE_COLUMNS))
    table = table.sort_values(
        ["fraction", "cell_type"], na_position="first", kind="stable"
    ).reset_index(drop=True)
    yield (STAGE_COVERAGE, 3, 3)
    return table


def coverage_text(row, max_listed: int = 8) -> str:
    """One row of :func:`marker_coverage` as a line: ``Naive CD4 T: 4/10 present: CCR7, SELL,
    LEF1, CD3E; missing: ...`` (at most ``max_listed`` names per list)."""
    def names(genes) -> str:
        genes = list(genes)
        more = len(genes) - max_listed
        return ", ".join(genes[:max_listed]) + (f" (+{more})" if more > 0 else "") if genes else "none"

    if not row["n_markers"]:
        return f"{row['cell_type']}: no specific marker (too few cells or no gene stands out)"
    return (f"{row['cell_type']}: {row['n_in_panel']}/{row['n_markers']} present: "
            f"{names(row['markers_in_panel'])}; missing: {names(row['markers_missing'])}")
