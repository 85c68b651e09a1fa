"""Exact cosine kNN and the weighted vote, checked against brute force."""

import numpy as np
import pytest

from napari_cellama._constants import UNASSIGNED
from napari_cellama.core import cosine_knn, knn_transfer, vote


def test_knn_matches_float64_brute_force():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(500, 32)).astype(np.float32)
    r = rng.normal(size=(900, 32)).astype(np.float32)
    idx, sim = cosine_knn(q, r, k=7, chunk=128)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    full = qn.astype(np.float64) @ rn.T.astype(np.float64)
    expected = np.argsort(-full, axis=1)[:, :7]
    assert (idx == expected).mean() > 0.999
    assert np.allclose(sim, np.take_along_axis(full, idx, axis=1), atol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-7).all()
    assert sim.dtype == np.float32


def test_torch_topk_and_numpy_argpartition_paths_agree():
    """Large products take the top-k with torch.topk, small ones with argpartition: same neighbours."""
    from napari_cellama.core import transfer

    rng = np.random.default_rng(3)
    q = rng.normal(size=(300, 24)).astype(np.float32)
    r = rng.normal(size=(2000, 24)).astype(np.float32)
    ref_idx, ref_sim = cosine_knn(q, r, k=10, chunk=64)
    s = transfer.l2_normalise(q) @ transfer.l2_normalise(r).T
    for topk in (transfer._topk_rows(n_pairs=10**12), transfer._topk_rows_numpy):
        v, i = topk(s.copy(), 10)
        order = transfer._sort_rows(v, i)
        assert (np.take_along_axis(i, order, axis=1) == ref_idx).all()
        assert np.allclose(np.take_along_axis(v, order, axis=1), ref_sim, atol=1e-6)
    assert transfer._topk_rows(n_pairs=10**12) is not transfer._topk_rows_numpy  # torch is installed here


def test_k_larger_than_reference_is_capped():
    rng = np.random.default_rng(1)
    idx, sim = cosine_knn(rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), k=10)
    assert idx.shape == (3, 2)


def test_weighted_vote_confidence_and_runner_up():
    labels = np.array([[0, 1, 1]])
    sims = np.array([[0.99, 0.5, 0.5]])
    best, conf, runner = vote(labels, sims, ["A", "B"])
    assert best[0] == 0  # one very close neighbour outweighs two far ones
    assert runner[0] == 1
    w = 1 / (np.array([0.01, 0.5, 0.5]) + 1e-3)
    assert conf[0] == pytest.approx(w[0] / w.sum())


def test_k1_is_nearest_neighbour_label_and_threshold_marks_unassigned():
    ref = np.eye(3, dtype=np.float32)
    query = np.array([[1, 0.1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    t = knn_transfer(query, ref, ["T", "B", "NK"], k=1, query_index=["q0", "q1", "q2"])
    assert t["transferred_type"].tolist()[:2] == ["T", "NK"]
    assert t.index.tolist() == ["q0", "q1", "q2"]
    assert (t["confidence"] == 1).all()
    assert t.loc["q0", "distance"] == pytest.approx(1 - 1 / np.sqrt(1.01), abs=1e-6)
    t3 = knn_transfer(query, ref, ["T", "B", "NK"], k=3, min_confidence=0.5, query_index=["a", "b", "c"])
    assert t3.loc["c", "cell_type"] == UNASSIGNED  # equidistant from all three types
    assert t3.loc["a", "cell_type"] == "T"
    t4 = knn_transfer(query, ref, ["T", "B", "NK"], k=1, max_distance=0.001)
    assert (t4["cell_type"] == UNASSIGNED).tolist() == [True, False, True]
