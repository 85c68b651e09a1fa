"""Accuracy guard of the Unknown call (issue 14) on real labelled cells: pbmc68k_reduced split
50/50, the real model, the default transfer (query clusters by Leiden). Cells of a type left out
of the reference are called Unknown, cells of present types are not, and a depth shift of the
whole query does not make Unknowns. Small (350 query cells); not timed. The full measurements
are benchmarks 3 and 4 of benchmarks/quality_transfer.py (docs/quality.md)."""

import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from napari_cellama._constants import CELL_TYPE, TRANSFERRED_TYPE, UNKNOWN
from napari_cellama.core import run_transfer
from napari_cellama.io import expression_for_sentences

LABEL = "bulk_labels"


@pytest.fixture(scope="module")
def split():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    ref_idx, q_idx = train_test_split(np.arange(adata.n_obs), test_size=0.5,
                                      stratify=adata.obs[LABEL], random_state=0)
    return adata[q_idx].copy(), adata[ref_idx].copy()


def _unknown(table) -> np.ndarray:
    return (table[CELL_TYPE] == UNKNOWN).to_numpy()


@pytest.mark.parametrize("missing", ["CD19+ B", "CD14+ Monocyte"])
def test_cells_of_a_type_the_reference_lacks_are_called_unknown(split, missing):
    """The previous (absolute) call left every monocyte Unknown-free when monocytes were missing
    from the reference: they were called Dendritic with ordinary scores."""
    query, ref = split
    table = run_transfer(query, ref[ref.obs[LABEL].astype(str) != missing].copy(), LABEL).table
    miss = (query.obs[LABEL].astype(str) == missing).to_numpy()
    unknown = _unknown(table)
    print(f"{missing} left out: Unknown among missing {unknown[miss].mean():.2f}, present {unknown[~miss].mean():.3f}")
    assert unknown[miss].mean() >= 0.5
    assert unknown[~miss].mean() <= 0.1


def test_a_query_of_reference_types_keeps_its_labels(split):
    query, ref = split
    table = run_transfer(query, ref, LABEL).table
    truth = query.obs[LABEL].astype(str).to_numpy()

    def f1(pred):
        return f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0)

    assert _unknown(table).mean() <= 0.02
    assert f1(table[CELL_TYPE].to_numpy()) >= f1(table[TRANSFERRED_TYPE].to_numpy()) - 0.005


def test_a_depth_shift_of_the_whole_query_makes_no_unknowns(split):
    """Every query cell keeps each count with probability 0.4 (another protocol's depth): the
    per-cell scores rise everywhere, the query-relative cluster test sees no outlier."""
    query, ref = split
    rng = np.random.default_rng(0)
    shifted = query.copy()
    x = shifted.X.tocsr(copy=True) if hasattr(shifted.X, "tocsr") else np.asarray(shifted.X).copy()
    if hasattr(x, "data"):
        x.data = rng.binomial(x.data.astype(np.int64), 0.4).astype(x.dtype)
        x.eliminate_zeros()
    else:
        x = rng.binomial(x.astype(np.int64), 0.4).astype(np.float32)
    shifted.X = x
    table = run_transfer(shifted, ref, LABEL).table
    print(f"depth-shifted query: Unknown share {_unknown(table).mean():.3f}")
    assert _unknown(table).mean() <= 0.05
