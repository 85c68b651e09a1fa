"""Demo expression: counts recovered from pbmc68k_reduced, the reference/held-out split, the panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._design import HMULTI_GENES, N_MARKERS_PER_TYPE, N_PANEL

# --------------------------------------------------------------------------- expression


def counts_from_lognorm(x) -> sp.csr_matrix:
    """Integer counts from log1p-normalised values (expm1, smallest non-zero = 1, round)."""
    x = sp.csr_matrix(x, dtype=np.float64)
    e = x.copy()
    e.data = np.expm1(e.data)
    mins = np.array(
        [e.data[a:b].min() if b > a else 1.0 for a, b in zip(e.indptr[:-1], e.indptr[1:])]
    )
    e.data /= np.repeat(mins, np.diff(e.indptr))
    e.data = np.round(e.data)
    e.eliminate_zeros()
    return e.astype(np.int32)


def _stratified_split(labels: pd.Series, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ref, held = [], []
    for name in sorted(labels.unique()):
        idx = np.flatnonzero((labels == name).to_numpy())
        idx = rng.permutation(idx)
        n_ref = (len(idx) + 1) // 2
        ref.append(idx[:n_ref])
        held.append(idx[n_ref:])
    return np.sort(np.concatenate(ref)), np.sort(np.concatenate(held))


def _choose_panel(
    lognorm_ref, labels_ref: pd.Series, genes: pd.Index, dispersion: np.ndarray
) -> list[str]:
    import anndata as ad
    import scanpy as sc

    allowed = ~genes.str.upper().str.match(r"^(MT-|RPL|RPS)")
    chosen = [g for g in genes if g in set(HMULTI_GENES)]
    obs = pd.DataFrame(
        {"t": labels_ref.astype("category").values}, index=[str(i) for i in range(len(labels_ref))]
    )
    tmp = ad.AnnData(X=sp.csr_matrix(lognorm_ref), obs=obs)
    tmp.var_names = genes
    sc.tl.rank_genes_groups(tmp, "t", method="wilcoxon", n_genes=len(genes), use_raw=False)
    names = pd.DataFrame(tmp.uns["rank_genes_groups"]["names"])
    for group in sorted(names.columns):
        picked = 0
        for g in names[group]:
            if picked == N_MARKERS_PER_TYPE:
                break
            if allowed[genes.get_loc(g)]:
                if g not in chosen:
                    chosen.append(g)
                picked += 1
    for i in np.argsort(-dispersion, kind="stable"):
        if len(chosen) >= N_PANEL:
            break
        if allowed[i] and genes[i] not in chosen:
            chosen.append(genes[i])
    return sorted(chosen[:N_PANEL])


