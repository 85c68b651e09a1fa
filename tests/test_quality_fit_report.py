"""The fit report shows why a cluster was flagged (issue 14): each cluster's residual ratio to the
query's typical cluster (the query-relative Unknown call's evidence), its profile residual, its
marker novelty, and which call was made - and, where the absolute fallback was used, why.

Small synthetic counts (tests/test_quality_relative_unknown.py's generator) through the real
transfer code (``iter_head_transfer``, constant embeddings); not timed."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_quality_relative_unknown import NEW, TYPES, _cells, _reference

from napari_cellama.core._progress import run
from napari_cellama.core.cluster_evidence import CLUSTER_NOVELTY, CLUSTER_RESIDUAL, PROFILE_RESIDUAL, UNKNOWN_CALL
from napari_cellama.core.fit_report import EVIDENCE_COLUMNS, FIT_COLUMNS, reference_fit_report
from napari_cellama.core.head_transfer import CellSet, iter_head_transfer
from napari_cellama.core.transfer_options import TransferOptions


def _transfer(query, clusters, options=None, seed=0):
    rng = np.random.default_rng(seed)
    ref, labels = _reference(rng)
    emb = rng.standard_normal((query.shape[0], 8)).astype(np.float32)
    remb = rng.standard_normal((ref.shape[0], 8)).astype(np.float32)
    ids = pd.Index([f"c{i}" for i in range(query.shape[0])])
    q = CellSet(emb, sp.csr_matrix(query), ids, clusters=None if clusters is None else np.asarray(clusters, object))
    r = CellSet(remb, ref, pd.RangeIndex(ref.shape[0]), labels=labels)
    table = run(iter_head_transfer(q, r, options or TransferOptions()))
    adata = ad.AnnData(X=sp.csr_matrix(query), obs=pd.DataFrame(index=ids),
                       var=pd.DataFrame(index=[f"g{i}" for i in range(query.shape[1])]))
    return table, adata, pd.Series(np.asarray(clusters, object), index=ids, name="graph") if clusters is not None \
        else None


def test_relative_call_report_shows_each_clusters_residual_ratio():
    rng = np.random.default_rng(1)
    query = np.vstack([_cells(rng, 60, TYPES["A"]), _cells(rng, 60, TYPES["B"]), _cells(rng, 60, TYPES["C"]),
                       _cells(rng, 40, NEW)])
    clusters = np.repeat(["a", "b", "c", "new"], [60, 60, 60, 40])
    table, adata, cl = _transfer(query, clusters)
    assert {CLUSTER_RESIDUAL, PROFILE_RESIDUAL, UNKNOWN_CALL} <= set(table.columns)
    report = reference_fit_report(table, adata, cl)
    t = report.table.set_index("cluster")
    assert list(report.table.columns) == list(FIT_COLUMNS[:7]) + [c for c in EVIDENCE_COLUMNS[:-1] if c != "detection_ratio"] + [
        "top_markers", "possibly_missing", UNKNOWN_CALL]
    # the ratio is the cluster's residual over the typical cluster's (cell-weighted median: a present one)
    typical = np.median(table[PROFILE_RESIDUAL])
    np.testing.assert_allclose(t[CLUSTER_RESIDUAL], t[PROFILE_RESIDUAL] / typical, rtol=1e-3)
    assert t.loc["new", CLUSTER_RESIDUAL] > 3.5 > t.drop("new")[CLUSTER_RESIDUAL].max()
    assert report.relative and report.unknown_call.startswith(f"relative: residual / typical cluster's ({typical:.2f})")
    assert (t[UNKNOWN_CALL] == report.unknown_call).all()
    text = report.summary()
    assert "Unknown call: relative" in text and "ratio" in text.splitlines()[2]
    new_line = next(line for line in text.splitlines() if line.split()[:1] == ["new"])
    assert f"{t.loc['new', CLUSTER_RESIDUAL]:.2f}" in new_line and f"{t.loc['new', PROFILE_RESIDUAL]:.2f}" in new_line


def test_absolute_fallback_is_reported_with_its_reason():
    """Only clusters of types the reference lacks: the typical residual is above 0.5, the absolute
    call is used, the ratio is empty and the report says why."""
    rng = np.random.default_rng(3)
    query = np.vstack([_cells(rng, 50, range(40, 48)), _cells(rng, 50, range(56, 64))])
    table, adata, cl = _transfer(query, np.repeat(["x", "y"], 50))
    report = reference_fit_report(table, adata, cl)
    t = report.table
    assert t[CLUSTER_RESIDUAL].isna().all() and t[PROFILE_RESIDUAL].gt(0.5).all()
    assert not report.relative
    typical = np.median(table[PROFILE_RESIDUAL])
    assert report.unknown_call.startswith(f"absolute: typical cluster residual {typical:.2f} > 0.5 (RELATIVE_MAX_BASELINE)")
    text = report.summary()
    assert "Unknown call: absolute" in text and "the absolute call was used" in text
    assert t[CLUSTER_NOVELTY].notna().all()


@pytest.mark.parametrize("options, why", [(TransferOptions(unknown_clusters=False), "cluster evidence switched off")])
def test_without_cluster_evidence_the_report_says_so(options, why):
    rng = np.random.default_rng(4)
    query = np.vstack([_cells(rng, 30, TYPES["A"]), _cells(rng, 30, TYPES["B"])])
    table, adata, cl = _transfer(query, np.repeat(["a", "b"], 30), options)
    report = reference_fit_report(table, adata, cl)
    assert report.unknown_call == f"cell only: {why}"
    assert CLUSTER_RESIDUAL not in report.table and "Unknown call: cell only" in report.summary()


def test_a_small_query_without_clusters_keeps_the_cells_scores_and_says_why():
    rng = np.random.default_rng(5)
    query = np.vstack([_cells(rng, 15, TYPES["A"]), _cells(rng, 15, TYPES["B"])])
    table, adata, _ = _transfer(query, None)
    assert str(table[UNKNOWN_CALL].iloc[0]).startswith("cell only: a query of fewer than 50 cells")
    report = reference_fit_report(table, adata, pd.Series(np.repeat(["a", "b"], 15), index=adata.obs_names))
    assert report.unknown_call.startswith("cell only")
