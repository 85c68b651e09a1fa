"""Shared gene panel between a query (Xenium) and a reference (scRNA).

Gene symbols are matched after stripping white space and upper-casing. Several
columns that map to the same symbol within one dataset (duplicate symbols, e.g.
``MALAT1`` and ``malat1 ``) are summed into one column. The shared genes are
written with the reference's spelling (its first occurrence), in the reference's
order, so that query and reference sentences use identical words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import DEFAULT_TOP_K
from ..validators import check_matrix, check_shared_genes, check_top_k


def normalise_symbol(names) -> pd.Index:
    """Matching key of gene symbols: white space stripped, upper case."""
    return pd.Index([str(s).strip().upper() for s in names])


@dataclass
class PanelReport:
    """What the shared panel keeps of each dataset (shown before anything is embedded)."""

    n_query_genes: int
    n_reference_genes: int
    n_shared: int
    shared_genes: list[str]
    reference_fraction_shared: float
    """Fraction of the reference's total counts carried by the shared genes."""
    query_fraction_shared: float
    """Fraction of the query's total counts carried by the shared genes."""
    n_query_cells: int
    n_query_cells_below_top_k: int
    """Query cells with fewer than ``top_k`` detected shared genes (shorter sentences)."""
    top_k: int
    n_query_cells_without_shared_genes: int = 0
    """Query cells with no detected shared gene: they get no sentence and stay Unassigned."""
    query_duplicates: list[str] = field(default_factory=list)
    reference_duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"query genes: {self.n_query_genes}, reference genes: {self.n_reference_genes}, "
            f"shared: {self.n_shared}",
            f"shared genes carry {self.reference_fraction_shared:.1%} of reference counts "
            f"and {self.query_fraction_shared:.1%} of query counts",
            f"query cells with fewer than {self.top_k} detected shared genes: "
            f"{self.n_query_cells_below_top_k} of {self.n_query_cells}",
        ]
        if self.n_query_cells_without_shared_genes:
            lines.append(
                f"query cells without any detected shared gene (left Unassigned): "
                f"{self.n_query_cells_without_shared_genes}"
            )
        if self.query_duplicates or self.reference_duplicates:
            lines.append(
                "duplicate symbols summed: "
                f"query {len(self.query_duplicates)}, reference {len(self.reference_duplicates)}"
            )
        return "\n".join(lines)


def _collapse(x, keys: pd.Index, spelling) -> tuple[object, pd.Index, list[str], list[str]]:
    """Sum columns of ``x`` that share a key; return matrix, unique keys, names, duplicates."""
    codes, uniques = pd.factorize(keys)
    dups = sorted(set(keys[keys.duplicated()]))
    first = pd.Series(np.arange(len(keys))).groupby(codes).first().to_numpy()
    names = [str(spelling[i]).strip() for i in first]
    if not dups:
        return x, pd.Index(uniques), names, dups
    agg = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (np.arange(len(codes)), codes)),
        shape=(len(codes), len(uniques)),
    )
    out = x @ agg
    if not sp.issparse(x):
        out = np.asarray(out)
    return out, pd.Index(uniques), names, dups


def _total(x) -> float:
    return float(x.sum()) if x.shape[0] and x.shape[1] else 0.0


def _as_matrix(adata):
    x = adata.X
    if x is None:
        raise ValueError("AnnData has no X matrix")
    return x if sp.issparse(x) else np.asarray(x)


def shared_panel(
    query: ad.AnnData, reference: ad.AnnData, top_k: int = DEFAULT_TOP_K
) -> tuple[ad.AnnData, ad.AnnData, PanelReport]:
    """Restrict query and reference to their shared genes.

    Returns new AnnData objects (``obs`` kept, ``X`` restricted to the shared genes
    in the same column order, ``var_names`` the reference's symbols) and a report.
    """
    top_k = check_top_k(top_k)
    qx, rx = _as_matrix(query), _as_matrix(reference)
    check_matrix(qx, "query")
    check_matrix(rx, "reference")
    qx, qkeys, _, qdups = _collapse(qx, normalise_symbol(query.var_names), query.var_names)
    rx, rkeys, rnames, rdups = _collapse(rx, normalise_symbol(reference.var_names), reference.var_names)

    shared_mask = rkeys.isin(qkeys)
    r_cols = np.flatnonzero(shared_mask)
    q_cols = qkeys.get_indexer(rkeys[r_cols])
    check_shared_genes(len(r_cols), len(qkeys), len(rkeys))
    names = [rnames[i] for i in r_cols]

    q_sub = qx[:, q_cols]
    r_sub = rx[:, r_cols]
    q_detected = (q_sub > 0).sum(axis=1)
    q_detected = np.asarray(q_detected).ravel()
    r_total, q_total = _total(rx), _total(qx)
    report = PanelReport(
        n_query_genes=len(qkeys),
        n_reference_genes=len(rkeys),
        n_shared=len(r_cols),
        shared_genes=names,
        reference_fraction_shared=_total(r_sub) / r_total if r_total else 0.0,
        query_fraction_shared=_total(q_sub) / q_total if q_total else 0.0,
        n_query_cells=int(query.n_obs),
        n_query_cells_below_top_k=int((q_detected < top_k).sum()),
        top_k=top_k,
        n_query_cells_without_shared_genes=int((q_detected == 0).sum()),
        query_duplicates=qdups,
        reference_duplicates=rdups,
    )
    var = pd.DataFrame(index=pd.Index(names, name="gene"))
    q_out = ad.AnnData(X=q_sub, obs=query.obs.copy(), var=var.copy())
    r_out = ad.AnnData(X=r_sub, obs=reference.obs.copy(), var=var.copy())
    for key in ("spatial",):
        if key in query.obsm:
            q_out.obsm[key] = np.asarray(query.obsm[key])
    return q_out, r_out, report
