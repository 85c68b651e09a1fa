"""``napari-cellama transfer --method / --unknown-alpha / --fit-report`` (issue 14)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

COLUMNS = ["cell_id", "cell_type", "confidence", "distance", "runner_up", "unknown_score", "unassigned_reason",
           "cluster_novelty", "query_cluster"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_cellama.cli", *map(str, args)],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pbmc_quality")
    adata = sc.datasets.pbmc68k_reduced()
    idx = np.random.default_rng(0).permutation(adata.n_obs)
    ref, query = adata[idx[:300]].copy(), adata[idx[300:420]].copy()
    ref.write_h5ad(d / "ref.h5ad")
    del query.obs["bulk_labels"]
    query.write_h5ad(d / "query.h5ad")
    return d


def test_default_method_writes_reasons_and_the_fit_report(files, tmp_path):
    out, fit = tmp_path / "labels.csv", tmp_path / "fit.csv"
    r = _cli("transfer", files / "query.h5ad", "--reference", files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", out, "--fit-report", fit)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == COLUMNS and len(df) == 120
    assert "method ensemble" in r.stderr
    assert "labels:" in r.stderr and "Unknown" in r.stderr
    report = pd.read_csv(fit)
    assert list(report.columns)[:3] == ["cluster", "n_cells", "share_unknown"]
    assert report["n_cells"].sum() == 120
    assert "reference fit per query cluster (Leiden" in r.stderr
    # why a cluster is (not) flagged: its residual ratio, its joint reference + query cluster's score
    # (the co-clustering evidence, on by default), its residual, and the call that was made
    assert list(report.columns)[7:11] == ["cluster_novelty", "cluster_residual", "joint_enrichment", "profile_residual"]
    assert list(report.columns)[-1] == "unknown_call"
    call = report["unknown_call"].iloc[0]
    assert (report["unknown_call"] == call).all() and f"Unknown call: {call}" in r.stderr
    assert "ratio" in r.stderr and "resid." in r.stderr
    if call.startswith("relative"):
        typical = float(call.split("(")[1].split(")")[0].split(",")[0])
        np.testing.assert_allclose(report["cluster_residual"], report["profile_residual"] / max(typical, 0.05),
                                   rtol=0.02, atol=0.01)
    else:
        assert call.startswith("absolute: ") and report["cluster_residual"].isna().all()
    # the pairs of reference types the shared panel does not tell apart, printed and written beside
    pairs = pd.read_csv(tmp_path / "fit_unresolved_pairs.csv")
    assert list(pairs.columns) == ["type_a", "type_b", "a_called_b", "b_called_a", "recall_a", "recall_b"]
    assert "panel resolution: the 765 shared genes" in r.stderr
    assert (pairs[["a_called_b", "b_called_a"]].max(axis=1) >= 0.25).all()
    assert f"wrote {len(pairs)} pair(s) of reference types" in r.stderr


def test_no_coclustering_leaves_the_joint_evidence_out(files, tmp_path):
    out, fit = tmp_path / "labels.csv", tmp_path / "fit.csv"
    r = _cli("transfer", files / "query.h5ad", "--reference", files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", out, "--fit-report", fit, "--no-coclustering")
    assert r.returncode == 0, r.stderr
    report = pd.read_csv(fit)
    assert "joint_enrichment" not in report.columns and "cluster_residual" in report.columns


def test_knn_method_and_no_unknown_call(files, tmp_path):
    out = tmp_path / "knn.csv"
    r = _cli("transfer", files / "query.h5ad", "--reference", files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", out, "--method", "knn", "--neighbors", "5")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert "Unknown" not in set(df["cell_type"])
    assert "method knn" in r.stderr
    off = tmp_path / "off.csv"
    r = _cli("transfer", files / "query.h5ad", "--reference", files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", off, "--unknown-alpha", "0", "--no-cluster-evidence")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(off, keep_default_na=False)
    assert "Unknown" not in set(df["cell_type"])
    assert list(df.columns) == COLUMNS[:7]  # the unknown score from each cell alone


@pytest.mark.parametrize("args, message", [(["--method", "svm"], "invalid choice: 'svm'"),
                                           (["--unknown-alpha", "2"], "--unknown-alpha must be between 0 and 1")])
def test_bad_method_options_end_with_one_line(files, tmp_path, args, message):
    r = _cli("transfer", files / "query.h5ad", "--reference", files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", tmp_path / "x.csv", *args)
    assert r.returncode == 2
    assert message in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
