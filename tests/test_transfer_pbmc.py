"""End-to-end transfer on real PBMCs with the real model."""

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from napari_cellama._constants import CONFIDENCE, DISTANCE, RUNNER_UP, SENTENCE, UNASSIGNED
from napari_cellama.core import run_transfer
from napari_cellama.io import expression_for_sentences


@pytest.fixture(scope="module")
def split():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    ref_idx, q_idx = train_test_split(
        np.arange(adata.n_obs), test_size=0.5, stratify=adata.obs["bulk_labels"], random_state=0
    )
    return adata[q_idx].copy(), adata[ref_idx].copy()


@pytest.fixture(scope="module")
def result(split):
    query, ref = split
    stages = set()
    res = run_transfer(query, ref, "bulk_labels", top_k=20, k=10, callback=lambda s, d, t: stages.add(s))
    res.stages = stages
    return res


def test_transfer_beats_majority_class_by_a_wide_margin(split, result):
    query, ref = split
    truth = query.obs["bulk_labels"].astype(str)
    pred = result.table.loc[truth.index, "cell_type"]
    acc = (pred == truth).mean()
    majority = truth.value_counts(normalize=True).iloc[0]
    macro_f1 = f1_score(truth, pred, average="macro")
    print(f"pbmc68k transfer: accuracy {acc:.3f}, macro-F1 {macro_f1:.3f}, majority {majority:.3f}")
    assert acc > majority + 0.25
    assert macro_f1 > 0.4


def test_result_table_shape_and_columns(split, result):
    query, _ = split
    t = result.table
    assert list(t.index) == list(query.obs_names)
    assert t[CONFIDENCE].between(0, 1).all()
    assert t[DISTANCE].between(0, 2).all()
    assert (t[RUNNER_UP] != t["transferred_type"]).all()
    assert t[SENTENCE].str.startswith("Top gene").all()
    assert result.query_embeddings.dtype == np.float32
    assert result.query_embeddings.shape == (query.n_obs, 384)
    assert {"sentences", "embedding reference", "embedding query", "kNN"} <= result.stages


def test_confident_cells_are_more_accurate(split, result):
    query, _ = split
    truth = query.obs["bulk_labels"].astype(str)
    t = result.table.loc[truth.index]
    hi = t[CONFIDENCE] >= t[CONFIDENCE].median()
    correct = t["transferred_type"] == truth
    assert correct[hi].mean() > correct[~hi].mean()


def test_k1_reproduces_nearest_reference_label(split, result):
    from napari_cellama.core import knn_transfer

    _, ref = split
    t1 = knn_transfer(result.query_embeddings, result.reference_embeddings,
                      ref.obs["bulk_labels"].astype(str).to_numpy(), k=1, reference_index=ref.obs_names)
    nearest_label = ref.obs.loc[t1["nearest_reference"], "bulk_labels"].astype(str).to_numpy()
    assert (t1["transferred_type"].to_numpy() == nearest_label).all()
    assert np.allclose(t1[DISTANCE].to_numpy(), result.table[DISTANCE].to_numpy(), atol=1e-6)


def test_threshold_marks_unassigned(split, result):
    from napari_cellama.core import apply_threshold

    labels = apply_threshold(result.table, min_confidence=0.9)
    assert (labels == UNASSIGNED).sum() == (result.table[CONFIDENCE] < 0.9).sum() > 0


def test_metadata_enters_sentences(split):
    query, ref = split
    q, r = query[:20].copy(), ref[:40].copy()
    res = run_transfer(q, r, "bulk_labels", top_k=5, k=3, metadata=["phase"])
    assert res.table[SENTENCE].str.contains(" phase of this cell is ").all()
    assert isinstance(res.table, pd.DataFrame)


def test_cells_without_shared_genes_stay_unassigned(split):
    query, ref = split
    q = query[:12].copy()
    x = q.X.toarray() if hasattr(q.X, "toarray") else np.array(q.X)
    x[:3] = 0
    q.X = x
    r = ref[:40].copy()
    rx = r.X.toarray() if hasattr(r.X, "toarray") else np.array(r.X)
    rx[0] = 0  # a reference cell with nothing detected must not vote
    r.X = rx
    res = run_transfer(q, r, "bulk_labels", top_k=5, k=3)
    t = res.table
    assert (t["cell_type"].iloc[:3] == UNASSIGNED).all()
    assert (t["transferred_type"].iloc[:3] == UNASSIGNED).all()
    assert (t[CONFIDENCE].iloc[:3] == 0).all()
    assert (t["cell_type"].iloc[3:] != UNASSIGNED).all()
    assert res.panel.n_query_cells_without_shared_genes == 3
    assert r.obs_names[0] not in set(t["nearest_reference"])
    assert len(res.reference_embeddings) == 39
