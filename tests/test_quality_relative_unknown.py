"""The query-relative Unknown call (issue 14): a query cluster that the reference types explain
far worse than the query's other clusters is Unknown; a shift that moves every cluster is not.
Small synthetic inputs for the mechanics; pbmc68k_reduced (real model) for the accuracy guard
in tests/test_quality_unknown_accuracy.py. Not timed."""

import numpy as np
import pandas as pd
import scipy.sparse as sp

from napari_cellama.core.cluster_evidence import (
    CLUSTER_NOVELTY,
    CLUSTER_RESIDUAL,
    PROFILE_RESIDUAL,
    UNKNOWN_CALL,
    cluster_residual,
)
from napari_cellama.core.head_transfer import CellSet
from napari_cellama.core.unknown import combine_cluster_evidence, with_cluster_evidence

N_GENES = 80
TYPES = {"A": range(0, 8), "B": range(8, 16), "C": range(16, 24)}
NEW = [0, 1, 2, 12, 13, 14, 21, 22, 23]
"""A type the reference lacks: a few markers of each of A, B and C (no mix of the types has that)."""


def _cells(rng, n, markers, depth=1.0):
    """Counts: a little background on every gene, many counts on the ``markers`` genes."""
    x = rng.poisson(0.3 * depth, size=(n, N_GENES)).astype(np.float32)
    x[:, list(markers)] += rng.poisson(6.0 * depth, size=(n, len(markers)))
    return x


def _reference(rng):
    x = np.vstack([_cells(rng, 60, m) for m in TYPES.values()])
    return sp.csr_matrix(x), np.repeat(list(TYPES), 60)


def _sets(query, clusters, ref, labels):
    emb = np.ones((query.shape[0], 4), np.float32)
    q = CellSet(emb, sp.csr_matrix(query), pd.RangeIndex(query.shape[0]), clusters=np.asarray(clusters, dtype=object))
    r = CellSet(np.ones((ref.shape[0], 4), np.float32), ref, pd.RangeIndex(ref.shape[0]), labels=labels)
    return q, r


def _three_present_one_new():
    """Clusters of the reference's types A, B, C (60 cells each) and of a new type (40 cells)."""
    rng = np.random.default_rng(1)
    ref, labels = _reference(rng)
    query = np.vstack([_cells(rng, 60, TYPES["A"]), _cells(rng, 60, TYPES["B"]), _cells(rng, 60, TYPES["C"]),
                       _cells(rng, 40, NEW)])
    clusters = np.repeat(["a", "b", "c", "new"], [60, 60, 60, 40])
    return (clusters, *_sets(query, clusters, ref, labels))


def test_a_mix_of_reference_types_is_explained_a_new_type_is_not():
    rng = np.random.default_rng(0)
    ref, labels = _reference(rng)
    mix = np.vstack([_cells(rng, 25, TYPES["A"]), _cells(rng, 25, TYPES["B"])])
    query = np.vstack([_cells(rng, 50, TYPES["A"]), mix, _cells(rng, 50, NEW)])
    res = cluster_residual(sp.csr_matrix(query), np.repeat(["a", "mix", "new"], 50), (ref, labels), n_genes=8)
    r = res.set_index("cluster")["residual"]
    assert r["a"] < 0.3 and r["mix"] < 0.3  # a cluster of two present types is not novel
    assert r["new"] > 0.4 and r["new"] > 3 * max(r["a"], r["mix"])
    assert res.attrs["n_genes"] == 24 and res["n_cells"].tolist() == [50, 50, 50]


def test_the_outlying_cluster_is_unknown_and_the_others_are_not():
    clusters, q, r = _three_present_one_new()
    own = np.full(len(clusters), 0.8, np.float32)  # every cell moderately atypical of its type
    # the residual's call alone (the co-clustering evidence, also on by default: test_quality_co_clustering.py)
    score, extra = with_cluster_evidence(own, q, r, coclustering=False)
    new = clusters == "new"
    assert (score[new] > 0.95).all() and (score[~new] <= 0.95).all()
    assert set(extra) == {CLUSTER_NOVELTY, CLUSTER_RESIDUAL, PROFILE_RESIDUAL, UNKNOWN_CALL, "query_cluster"}
    assert extra[CLUSTER_RESIDUAL][new].min() > 3.5 > extra[CLUSTER_RESIDUAL][~new].max()
    # the ratio is the cluster's residual over the typical (cell-weighted median) cluster's
    res = extra[PROFILE_RESIDUAL]
    np.testing.assert_allclose(extra[CLUSTER_RESIDUAL], res / np.median(res), rtol=1e-5)
    assert list(pd.unique(np.asarray(extra[UNKNOWN_CALL]))) == [
        f"relative: residual / typical cluster's ({np.median(res):.2f}) - "
        "Unknown from a ratio of 3.5 at the default level"]
    # two-sided: a cell typical of its predicted type (own score 0.3) stays, even in the new cluster
    own[new] = 0.3
    score, _ = with_cluster_evidence(own, q, r, coclustering=False)
    assert (score[new] <= 0.95).all()


def test_a_shift_of_every_cluster_does_not_make_unknowns():
    """Every query cluster at a third of the reference's depth, with extra background (another
    protocol): all residuals rise together, so none is an outlier."""
    rng = np.random.default_rng(2)
    ref, labels = _reference(rng)
    query = np.vstack([_cells(rng, 60, m, depth=0.35) for m in TYPES.values()])
    query += rng.poisson(0.4, size=query.shape)
    clusters = np.repeat(["a", "b", "c"], 60)
    q, r = _sets(query, clusters, ref, labels)
    score, extra = with_cluster_evidence(np.full(180, 0.99, np.float32), q, r)
    assert (score <= 0.95).all()
    assert np.nanmax(extra[CLUSTER_RESIDUAL]) < 2.0


def test_without_a_well_matched_part_of_the_query_the_absolute_score_is_used():
    """Only novel clusters: no shift can be measured, the score is the mean of the cell's own
    score and its cluster's novelty, and the ratio column is empty."""
    rng = np.random.default_rng(3)
    ref, labels = _reference(rng)
    query = np.vstack([_cells(rng, 50, range(40, 48)), _cells(rng, 50, range(56, 64))])
    q, r = _sets(query, np.repeat(["x", "y"], 50), ref, labels)
    own = np.full(100, 0.96, np.float32)
    score, extra = with_cluster_evidence(own, q, r)
    assert np.isnan(extra[CLUSTER_RESIDUAL]).all()
    np.testing.assert_allclose(score, (own + extra[CLUSTER_NOVELTY]) / 2, rtol=1e-6)
    # the call says why: the typical cluster's residual is above RELATIVE_MAX_BASELINE
    call = str(extra[UNKNOWN_CALL][0])
    typical = np.median(extra[PROFILE_RESIDUAL])
    assert call.startswith(f"absolute: typical cluster residual {typical:.2f} > 0.5 (RELATIVE_MAX_BASELINE) - ")
    assert (np.asarray(extra[UNKNOWN_CALL]) == call).all()
    assert (score > 0.95).all()


def test_the_detection_deviance_is_opt_in_and_counts_beside_the_residual():
    clusters, q, r = _three_present_one_new()
    own = np.full(len(clusters), 0.8, np.float32)
    plain, _ = with_cluster_evidence(own, q, r, coclustering=False)
    score, extra = with_cluster_evidence(own, q, r, detection=True, coclustering=False)
    new = clusters == "new"
    det = extra["detection_ratio"]
    assert (det[~new] < 3.5).all()  # present clusters detect what their types detect
    ratio = np.fmax(extra[CLUSTER_RESIDUAL], det)  # the larger of the two ratios counts
    np.testing.assert_allclose(score, combine_cluster_evidence(own, extra[CLUSTER_NOVELTY], ratio), rtol=1e-6)
    assert (score >= plain - 1e-6).all() and (score[new] > 0.95).all()
    assert "detection deviance" in str(np.asarray(extra[UNKNOWN_CALL])[0])
