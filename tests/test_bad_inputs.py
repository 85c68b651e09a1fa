"""Bad inputs end with exit 2 and one precise line (issue 13 items 11, 15, 16)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _hash_embedder import HashEmbedder

from napari_cellama.cli import main
from napari_cellama.core import run_transfer
from napari_cellama.io import load_session, read_query, read_reference, write_h5ad
from napari_cellama.validators import CellamaInputError, check_cell_types

CROP = Path(__file__).resolve().parents[2] / "shared" / "data" / "xenium_bone_marrow_crop"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    a = sc.datasets.pbmc68k_reduced()
    ref, query = a[:100].copy(), a[100:140].copy()
    ref.write_h5ad(d / "ref.h5ad")
    query.write_h5ad(d / "q.h5ad")
    (d / "panel.bin").write_bytes(bytes(range(256)) * 8)
    return d


def _one_line_exit_2(capsys, *args):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("napari-cellama: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- item 15
@pytest.mark.parametrize("extra, expected", [
    (["--top-k", "100000000000000000000"], "top-k must be at most"),
    (["--dask-scheduler", "tcp://::nonsense:x"], "bad Dask scheduler address"),
    (["--max-per-type", "0"], "--max-per-type must be a positive"),
])
def test_transfer_bad_options_exit_2(files, tmp_path, capsys, extra, expected):
    line = _one_line_exit_2(capsys, "transfer", files / "q.h5ad", "--reference", files / "ref.h5ad",
                            "--label-key", "bulk_labels", "--out", tmp_path / "o.csv", *extra)
    assert expected in line and not (tmp_path / "o.csv").exists()


def test_binary_panel_exit_2(files, tmp_path, capsys):
    line = _one_line_exit_2(capsys, "finetune", "--reference", files / "ref.h5ad", "--out", tmp_path / "m",
                            "--panel", files / "panel.bin")
    assert "not a readable gene list" in line


def test_niche_cell_types_with_commas_and_spaces(tmp_path):
    """``--cell-types`` could not name types with commas or surrounding spaces."""
    from argparse import Namespace

    from napari_cellama._cli.niche import chosen_cell_types

    available = ["Stromal, CXCL12-abundant", " B cell", "T"]
    listing = tmp_path / "types.txt"
    listing.write_text("Stromal, CXCL12-abundant\n B cell\n\n")
    args = Namespace(cell_types=None, cell_type=["Stromal, CXCL12-abundant", " B cell"], cell_types_file=None)
    assert check_cell_types(chosen_cell_types(args, available), available) == available[:2]
    args = Namespace(cell_types="T", cell_type=None, cell_types_file=str(listing))
    assert check_cell_types(chosen_cell_types(args, available), available) == ["T"] + available[:2]
    with pytest.raises(CellamaInputError, match="--cell-type"):
        chosen_cell_types(Namespace(cell_types=None, cell_type=None, cell_types_file=None), available)


# --------------------------------------------------------------------------- item 16
def test_labelled_reference_without_detected_shared_gene_says_so(files):
    a = sc.datasets.pbmc68k_reduced().raw.to_adata()
    x = np.asarray(a[:30].X.todense() if hasattr(a.X, "todense") else a[:30].X, dtype=np.float32)
    x[:, :3] = 0  # the shared genes are never detected in the reference
    ref = ad.AnnData(X=x, obs=pd.DataFrame({"label": ["T"] * 30}, index=[f"r{i}" for i in range(30)]),
                     var=pd.DataFrame(index=list(a.var_names)))
    query = ad.AnnData(X=np.ones((5, 3), dtype=np.float32), var=pd.DataFrame(index=list(a.var_names[:3])))
    with pytest.raises(CellamaInputError, match="none of the 30 labelled reference cells has a detected gene"):
        run_transfer(query, ref, "label", embedder=HashEmbedder())


def test_h5ad_without_x_is_not_called_scaled(tmp_path):
    a = ad.AnnData(obs=pd.DataFrame(index=["c1", "c2"]), var=pd.DataFrame(index=["G1"]))
    a.write_h5ad(tmp_path / "nox.h5ad")
    with pytest.raises(CellamaInputError, match="no expression matrix") as err:
        read_reference(tmp_path / "nox.h5ad")
    assert "negative" not in str(err.value)


def test_damaged_parquet_is_named(tmp_path):
    if not CROP.is_dir():
        pytest.skip("no Xenium crop on this machine")
    run = tmp_path / "run"
    shutil.copytree(CROP, run, ignore=shutil.ignore_patterns("morphology_focus", "transcripts.parquet"))
    p = run / "cells.parquet"
    raw = bytearray(p.read_bytes())
    for i in range(8, len(raw) // 2):  # damage the data pages, keep the footer
        raw[i] ^= 0x55
    p.write_bytes(bytes(raw))
    with pytest.raises(CellamaInputError, match="cells.parquet"):
        read_query(run)


# --------------------------------------------------------------------------- item 11
def _table():
    labels = ["T", "B", "B"]
    return pd.DataFrame({"transferred_type": labels, "cell_type": labels, "confidence": [1.0, 0.5, 0.7],
                         "distance": [0.1, 0.2, 0.3], "runner_up": ["B", "T", "T"]},
                        index=pd.Index(["c1", "c2", "c3"], name="cell_id"))


@pytest.mark.parametrize("field, value, expected", [
    ("session", [1, 2], "['session'] should be a JSON object"),
    ("colors", "red", "['colors'] should be a JSON object"),
    ("history", {"a": 1}, "['history'] should be a JSON list"),
    ("params", 5, "['params'] should be a JSON object"),
    ("session", {"min_confidence": "high"}, "['min_confidence'] should be a number"),
    ("obs.confidence", ["high", "low", "mid"], "column 'confidence'"),
])
def test_damaged_session_is_one_clear_error(tmp_path, field, value, expected):
    """Item 11: type-damaged uns['cellama'] or string confidences raised a raw TypeError."""
    path = write_h5ad(tmp_path / "c.h5ad", _table())
    a = ad.read_h5ad(path)
    if field.startswith("obs."):
        a.obs[field[4:]] = value
    else:
        a.uns["cellama"][field] = json.dumps(value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(tmp_path / "damaged.h5ad")
    with pytest.raises(CellamaInputError) as err:
        load_session(tmp_path / "damaged.h5ad")
    assert expected in str(err.value)
