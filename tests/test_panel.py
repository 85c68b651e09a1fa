"""Shared gene panel: normalised symbols, duplicates, report numbers."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_cellama.core import shared_panel
from napari_cellama.validators import CellamaInputError


def _adata(x, genes, obs=None):
    x = np.asarray(x, dtype=np.float32)
    obs = obs if obs is not None else pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])])
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes))


def test_symbols_match_after_case_and_whitespace_normalisation():
    q = _adata([[1, 2, 3]], ["cd3e ", "Lyz", "XIST"])
    r = _adata([[4, 5, 6, 7]], ["CD3E", "LYZ", "MS4A1", "GNLY"])
    q2, r2, rep = shared_panel(q, r, top_k=2)
    assert list(q2.var_names) == ["CD3E", "LYZ"] == list(r2.var_names)  # reference spelling
    assert q2.X.toarray().tolist() == [[1, 2]]
    assert r2.X.toarray().tolist() == [[4, 5]]
    assert (rep.n_query_genes, rep.n_reference_genes, rep.n_shared) == (3, 4, 2)
    assert rep.reference_fraction_shared == pytest.approx(9 / 22)
    assert rep.query_fraction_shared == pytest.approx(3 / 6)


def test_duplicate_symbols_are_summed_and_reported():
    q = _adata([[1, 2, 3]], ["CD3E", "cd3e", "LYZ"])
    r = _adata([[1, 1]], ["LYZ", "CD3E"])
    q2, r2, rep = shared_panel(q, r)
    assert list(q2.var_names) == ["LYZ", "CD3E"]
    assert q2.X.toarray().tolist() == [[3, 3]]
    assert rep.query_duplicates == ["CD3E"]


def test_cells_below_top_k_are_counted():
    q = _adata([[1, 0, 0], [1, 1, 1], [0, 0, 0]], ["A", "B", "C"])
    r = _adata([[1, 1, 1]], ["A", "B", "C"])
    *_, rep = shared_panel(q, r, top_k=2)
    assert rep.n_query_cells_below_top_k == 2
    assert rep.n_query_cells_without_shared_genes == 1
    assert "2 of 3" in rep.summary()


def test_no_shared_genes_is_a_clear_error():
    q = _adata([[1]], ["ENSG00000167286"])
    r = _adata([[1]], ["CD3E"])
    with pytest.raises(CellamaInputError, match="share no gene symbols"):
        shared_panel(q, r)


def test_empty_matrix_is_a_clear_error():
    q = ad.AnnData(X=sp.csr_matrix((0, 2), dtype=np.float32), var=pd.DataFrame(index=["A", "B"]))
    r = _adata([[1, 1]], ["A", "B"])
    with pytest.raises(CellamaInputError, match="no cells"):
        shared_panel(q, r)
