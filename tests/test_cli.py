"""The ``napari-cellama transfer`` command on an h5ad and on the real Xenium crop."""

import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from napari_cellama.cli import main
from napari_cellama.io import expression_for_sentences

CROP = Path(__file__).resolve().parents[2] / "shared" / "data" / "xenium_bone_marrow_crop"
COLUMNS = ["cell_id", "cell_type", "confidence", "distance", "runner_up", "unknown_score", "unassigned_reason",
           "cluster_novelty", "query_cluster"]  # the last two: the Unknown call's cluster evidence (docs/cli.md)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_cellama.cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def pbmc_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pbmc")
    adata = sc.datasets.pbmc68k_reduced()
    rng = np.random.default_rng(0)
    idx = rng.permutation(adata.n_obs)
    ref, query = adata[idx[:300]].copy(), adata[idx[300:380]].copy()
    ref.write_h5ad(d / "ref.h5ad")
    del query.obs["bulk_labels"]
    query.write_h5ad(d / "query.h5ad")
    return d


def test_cli_on_h5ad(pbmc_files, tmp_path):
    out = tmp_path / "labels.csv"
    r = _cli("transfer", pbmc_files / "query.h5ad", "--reference", pbmc_files / "ref.h5ad",
             "--label-key", "bulk_labels", "--neighbors", "5", "--out", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and len(df) == 80
    assert df["cell_id"].is_unique
    assert "embedding query" in r.stderr  # progress on stderr
    assert r.stdout == ""


@pytest.mark.skipif(not CROP.exists(), reason="shared Xenium crop not present")
def test_cli_on_real_xenium_crop(pbmc_files, tmp_path):
    out = tmp_path / "crop_labels.csv"
    r = _cli("transfer", CROP, "--reference", pbmc_files / "ref.h5ad", "--label-key", "bulk_labels",
             "--out", out)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    cells = pd.read_parquet(CROP / "cells.parquet")
    assert set(df["cell_id"]) == set(cells["cell_id"])
    assert df["cell_type"].nunique() > 1
    assert "shared" in r.stderr  # panel report printed


@pytest.mark.parametrize(
    "case",
    ["missing_query", "missing_reference", "bad_label", "no_shared", "empty", "not_xenium_dir", "bad_h5ad"],
)
def test_bad_input_is_one_line_and_nonzero(case, pbmc_files, tmp_path):
    ref = pbmc_files / "ref.h5ad"
    query = pbmc_files / "query.h5ad"
    label = "bulk_labels"
    if case == "missing_query":
        query = tmp_path / "nope.h5ad"
    elif case == "missing_reference":
        ref = tmp_path / "nope.h5ad"
    elif case == "bad_label":
        label = "celltype_that_is_not_there"
    elif case == "no_shared":
        a = expression_for_sentences(sc.read_h5ad(query))
        a = ad.AnnData(X=a.X, obs=a.obs, var=pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(a.n_vars)]))
        query = tmp_path / "ensembl.h5ad"
        a.write_h5ad(query)
    elif case == "empty":
        a = sc.read_h5ad(query)[:0].copy()
        query = tmp_path / "empty.h5ad"
        a.write_h5ad(query)
    elif case == "not_xenium_dir":
        query = tmp_path / "folder"
        query.mkdir()
    elif case == "bad_h5ad":
        query = tmp_path / "broken.h5ad"
        query.write_bytes(b"not an hdf5 file")
    r = _cli("transfer", query, "--reference", ref, "--label-key", label, "--out", tmp_path / "o.csv")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("napari-cellama:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.csv").exists()


def test_cli_missing_model_is_one_line(pbmc_files, tmp_path, capsys):
    rc = main(["transfer", str(pbmc_files / "query.h5ad"), "--reference", str(pbmc_files / "ref.h5ad"),
               "--label-key", "bulk_labels", "--model", "no-such/model", "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "could not load a sentence-transformers model" in err and "no-such/model" in err


def test_console_script_is_installed():
    exe = shutil.which("napari-cellama") or str(Path(sys.executable).parent / "napari-cellama")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "transfer" in r.stdout


@pytest.mark.parametrize("option,value", [("--min-confidence", "1.5"), ("--max-distance", "-0.1")])
def test_thresholds_out_of_range_are_refused(pbmc_files, tmp_path, option, value):
    r = _cli("transfer", pbmc_files / "query.h5ad", "--reference", pbmc_files / "ref.h5ad",
             "--label-key", "bulk_labels", option, value, "--out", tmp_path / "o.csv")
    assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr


def test_output_inside_xenium_folder_is_refused(tmp_path):
    if not CROP.exists():
        pytest.skip("shared Xenium crop not present")
    run = tmp_path / "run"
    shutil.copytree(CROP, run)
    r = _cli("transfer", run, "--reference", run / "missing.h5ad", "--label-key", "x", "--out", run / "o.csv")
    assert r.returncode == 2 and "inside the Xenium input folder" in r.stderr


def test_gui_without_display_or_with_missing_path_is_one_line(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "napari_cellama.cli", "gui"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no display" in r.stderr and "Traceback" not in r.stderr
    r = _cli("gui", tmp_path / "nope")
    assert r.returncode == 2 and "not found" in r.stderr
