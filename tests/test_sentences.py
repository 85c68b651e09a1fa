"""Cell sentences: format, ranking, ties, zero counts, metadata, dense/sparse parity."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_cellama._constants import NO_GENES_SENTENCE
from napari_cellama.core import cell_sentences, top_genes
from napari_cellama.validators import CellamaInputError

GENES = ["CD3E", "MS4A1", "LYZ", "NKG7", "GNLY"]


def test_three_or_more_genes_use_serial_comma():
    x = np.array([[5, 1, 3, 0, 2]])
    assert cell_sentences(x, GENES, top_k=3) == ["Top genes are CD3E, LYZ, and GNLY."]


def test_two_genes_and_one_gene():
    x = np.array([[0, 4, 0, 1, 0], [0, 0, 7, 0, 0]])
    assert cell_sentences(x, GENES, top_k=20) == ["Top genes are MS4A1 and NKG7.", "Top gene is LYZ."]


def test_zero_count_genes_never_enter():
    x = np.array([[0, 0, 2, 0, 0], [0, 0, 0, 0, 0]])
    out = cell_sentences(x, GENES, top_k=5)
    assert out == ["Top gene is LYZ.", NO_GENES_SENTENCE]
    assert "MS4A1" not in out[0]


def test_top_k_caps_the_sentence_and_orders_by_value():
    rng = np.random.default_rng(1)
    x = rng.permutation(np.arange(1, 31, dtype=float))[None, :]
    names = [f"G{i:02d}" for i in range(30)]
    (s,) = cell_sentences(x, names, top_k=20)
    listed = s.removeprefix("Top genes are ").removesuffix(".").replace(", and ", ", ").split(", ")
    assert len(listed) == 20
    expected = [names[i] for i in np.argsort(-x[0])[:20]]
    assert listed == expected


def test_ties_break_by_gene_symbol_regardless_of_column_order():
    x = np.array([[1, 1, 1, 1, 1]])
    (a,) = cell_sentences(x, GENES, top_k=3)
    perm = [4, 2, 0, 3, 1]
    (b,) = cell_sentences(x[:, perm], [GENES[i] for i in perm], top_k=3)
    assert a == b == "Top genes are CD3E, GNLY, and LYZ."


def test_tie_at_the_cut_keeps_alphabetically_first():
    # values: CD3E 3, the rest tie at 1; top-2 must pick CD3E then the alphabetically first tie
    x = np.array([[3, 1, 1, 1, 1]])
    assert cell_sentences(x, GENES, top_k=2) == ["Top genes are CD3E and GNLY."]


def test_dense_and_sparse_give_identical_sentences():
    rng = np.random.default_rng(0)
    x = rng.poisson(0.4, size=(300, 60)).astype(np.float32)
    names = [f"GENE{i}" for i in rng.permutation(60)]
    dense = cell_sentences(x, names, top_k=7)
    assert dense == cell_sentences(sp.csr_matrix(x), names, top_k=7)
    assert dense == cell_sentences(sp.csc_matrix(x), names, top_k=7)


def test_ranking_is_scale_invariant_within_cell():
    rng = np.random.default_rng(2)
    counts = rng.poisson(1.0, size=(50, 40)).astype(np.float64)
    names = [f"G{i}" for i in range(40)]
    lognorm = np.log1p(counts / counts.sum(1, keepdims=True).clip(1) * 1e4)
    assert cell_sentences(counts, names, 10) == cell_sentences(lognorm, names, 10)


def test_metadata_appended_and_missing_written_unknown():
    x = np.array([[1, 0, 0, 0, 0], [0, 2, 0, 0, 0]])
    obs = pd.DataFrame({"tissue": ["marrow", np.nan], "batch": pd.Categorical(["b1", None])})
    out = cell_sentences(x, GENES, top_k=3, obs=obs, metadata=["tissue", "batch"])
    assert out[0] == "Top gene is CD3E. tissue of this cell is marrow. batch of this cell is b1."
    assert out[1] == "Top gene is MS4A1. tissue of this cell is unknown. batch of this cell is unknown."
    assert all("nan" not in s for s in out)


def test_top_genes_ragged_arrays():
    x = sp.csr_matrix(np.array([[0, 2, 1, 0, 0], [0, 0, 0, 0, 0], [9, 9, 0, 0, 1]]))
    indptr, indices = top_genes(x, top_k=2, gene_names=GENES)
    assert indptr.tolist() == [0, 2, 2, 4]
    assert [GENES[i] for i in indices] == ["MS4A1", "LYZ", "CD3E", "MS4A1"]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_top_k_is_refused(bad):
    with pytest.raises(CellamaInputError, match="top-k"):
        cell_sentences(np.ones((1, 5)), GENES, top_k=bad)


def test_mismatched_gene_names_are_refused():
    with pytest.raises(ValueError, match="gene names"):
        cell_sentences(np.ones((2, 5)), GENES[:3], top_k=2)
