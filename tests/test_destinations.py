"""Destinations (issue 13 items 1-4 and 12): only this tool's own outputs are ever replaced,
and every destination is checked before any work starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from napari_cellama.cli import main
from napari_cellama.core.cache import EmbeddingCache
from napari_cellama.io import load_session, write_spatialdata
from napari_cellama.io.destinations import (
    ZARR_MARKER,
    check_destination,
    check_model_folder,
    check_outputs,
    check_writable_folder,
    is_own_zarr,
)
from napari_cellama.validators import CellamaInputError


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _xenium_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "experiment.xenium").write_text(json.dumps({"run_name": "bone marrow"}))
    (folder / "cells.parquet").write_bytes(b"PAR1 cells")
    (folder / "analysis").mkdir()
    (folder / "analysis" / "clusters.csv").write_text("Barcode,Cluster\n1,1\n")
    return folder


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    a = sc.datasets.pbmc68k_reduced()[:40].copy()
    a.write_h5ad(d / "ref.h5ad")
    return d / "ref.h5ad"


def _run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


# --------------------------------------------------------------------------- item 1: finetune --overwrite
@pytest.mark.parametrize("victim", ["project_with_reference", "xenium_run", "thesis"])
def test_finetune_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path, small_h5ad, capsys, victim):
    """Item 1: ``finetune --overwrite --out DIR`` deleted whatever DIR held."""
    if victim == "project_with_reference":
        out = tmp_path / "project"
        out.mkdir()
        ref = out / "ref.h5ad"
        ref.write_bytes(small_h5ad.read_bytes())
    elif victim == "xenium_run":
        out = _xenium_run(tmp_path / "run")
        ref = small_h5ad
    else:
        out = tmp_path / "thesis"
        out.mkdir()
        (out / "chapter1.tex").write_text("keep me")
        ref = small_h5ad
    before = _tree(out)
    code, err = _run_cli(capsys, "finetune", "--reference", ref, "--out", out, "--overwrite")
    assert code == 2 and err.count("napari-cellama: error:") == 1, err
    assert _tree(out) == before


def test_finetune_overwrite_replaces_only_an_earlier_finetuned_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "cellama_finetune.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    assert check_model_folder(model, overwrite=True) == model.resolve()
    with pytest.raises(CellamaInputError, match="--overwrite"):
        check_model_folder(model, overwrite=False)
    (tmp_path / "empty").mkdir()
    assert check_model_folder(tmp_path / "empty") == (tmp_path / "empty").resolve()
    with pytest.raises(CellamaInputError, match="overlaps the input"):
        check_model_folder(model, overwrite=True, sources=[model / "ref.h5ad"])


# --------------------------------------------------------------------------- item 2: cache --clear
def test_cache_clear_deletes_only_cache_namespaces(tmp_path, capsys):
    """Item 2: ``cache --clear --dir DIR`` deleted every subfolder of DIR."""
    run = _xenium_run(tmp_path / "xenium_run")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "draft.docx").write_bytes(b"years of work")
    odd = tmp_path / "looks-like-a-namespace"  # a meta.json, but also a user's file
    odd.mkdir()
    (odd / "meta.json").write_text("{}")
    (odd / "results.xlsx").write_bytes(b"data")
    cache = EmbeddingCache(tmp_path)
    cache.store("m-exact", ["Top genes are A."], np.ones((1, 4), dtype=np.float32))
    kept = {p: _tree(p) for p in (run, thesis, odd)}
    code, err = _run_cli(capsys, "cache", "--clear", "--dir", tmp_path)
    assert code == 0
    assert not (tmp_path / "m-exact").exists()
    assert {p: _tree(p) for p in kept} == kept
    assert "left alone" in err and "thesis" in err


# --------------------------------------------------------------------------- item 3: zarr stores
def _annotation_table():
    ids = pd.Index([f"c{i}" for i in range(4)], name="cell_id")
    labels = ["T", "B", "T", "NK"]
    return pd.DataFrame({"transferred_type": labels, "cell_type": labels, "confidence": [1.0, 0.6, 0.8, 0.5],
                         "distance": [0.1, 0.2, 0.3, 0.4], "runner_up": ["B", "T", "NK", "T"]}, index=ids)


def test_zarr_of_another_tool_is_never_silently_replaced(tmp_path, capsys, small_h5ad):
    """Item 3: ``transfer --zarr PATH`` silently replaced a zarr store written by another tool."""
    foreign = tmp_path / "other.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    (foreign / "images").mkdir()
    (foreign / "images" / "data").write_bytes(b"someone else's image")
    before = _tree(foreign)
    code, err = _run_cli(capsys, "transfer", small_h5ad, "--reference", small_h5ad, "--label-key", "bulk_labels",
                         "--out", tmp_path / "o.csv", "--zarr", foreign)
    assert code == 2 and "not written by napari-cellama" in err and "--overwrite" in err
    with pytest.raises(CellamaInputError, match="not written by napari-cellama"):
        write_spatialdata(foreign, _annotation_table(), overwrite=True)
    assert _tree(foreign) == before
    # explicit consent replaces it
    assert check_destination(foreign, "SpatialData zarr", folder=True, replace_foreign=True) == foreign.resolve()


def test_own_zarr_carries_a_marker_and_is_replaced(tmp_path):
    out = write_spatialdata(tmp_path / "s.zarr", _annotation_table())
    assert (out / ZARR_MARKER).is_file() and is_own_zarr(out)
    write_spatialdata(out, _annotation_table(), overwrite=True)
    assert load_session(out).annotation.n_cells == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


# --------------------------------------------------------------------------- item 4: collisions
@pytest.mark.parametrize("other", ["--explorer-csv", "--h5ad"])
def test_outputs_naming_the_same_file_are_refused_before_the_run(tmp_path, small_h5ad, capsys, other):
    """Item 4: ``--out`` and ``--explorer-csv`` naming one file: the per-cell CSV was replaced."""
    out = tmp_path / "cells.csv"
    code, err = _run_cli(capsys, "transfer", small_h5ad, "--reference", small_h5ad, "--label-key", "bulk_labels",
                         "--out", out, other, tmp_path / "." / "cells.csv")
    assert code == 2 and "same file" in err, err
    assert not out.exists()


def test_fit_report_pairs_file_may_not_replace_another_output(tmp_path, small_h5ad, capsys):
    """``--fit-report F.csv`` also writes ``F_unresolved_pairs.csv``: an ``--out`` of that name is refused."""
    out = tmp_path / "fit_unresolved_pairs.csv"
    code, err = _run_cli(capsys, "transfer", small_h5ad, "--reference", small_h5ad, "--label-key", "bulk_labels",
                         "--out", out, "--fit-report", tmp_path / "fit.csv")
    assert code == 2 and "same file" in err and "unresolved pairs" in err, err
    assert not out.exists()


def test_outputs_inside_each_other_or_an_input_are_refused(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    with pytest.raises(CellamaInputError, match="overlap"):
        check_outputs({"SpatialData zarr": tmp_path / "s.zarr", "output CSV": tmp_path / "s.zarr" / "x.csv"},
                      folders=["SpatialData zarr"])
    with pytest.raises(CellamaInputError, match="inside the input|is inside"):
        check_outputs({"output CSV": tmp_path / "in.h5ad"}, sources=[tmp_path / "in.h5ad"])


def test_niche_output_colliding_with_its_labels_is_refused(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("cell_id,cell_type\nc1,T\n")
    code, err = _run_cli(capsys, "niche", tmp_path, "--labels", labels, "--cell-type", "T", "--out", labels)
    assert code == 2 and "inside the input" in err
    assert labels.read_text() == "cell_id,cell_type\nc1,T\n"


# --------------------------------------------------------------------------- item 12: checked up front
def test_missing_screenshot_folder_fails_at_once(tmp_path, capsys):
    """Item 12: a missing folder for --screenshot was found only after the viewer had loaded."""
    code, err = _run_cli(capsys, "gui", "--screenshot", tmp_path / "missing" / "shot.png")
    assert code == 2 and "does not exist" in err


def test_unwritable_destination_fails_before_any_work(tmp_path, small_h5ad, capsys):
    """Item 12: a read-only destination was discovered only after minutes of work."""
    ro = Path("/sys/kernel")
    if not ro.is_dir() or os.access(ro, os.W_OK) and _can_create(ro):
        pytest.skip("no read-only folder on this machine")
    with pytest.raises(CellamaInputError, match="cannot write"):
        check_writable_folder(ro, "output CSV")
    code, err = _run_cli(capsys, "transfer", small_h5ad, "--reference", small_h5ad, "--label-key", "bulk_labels",
                         "--out", tmp_path / "o.csv", "--zarr", ro / "s.zarr")
    assert code == 2 and "cannot write" in err
    assert not (tmp_path / "o.csv").exists()


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".probe-test").touch()
    except OSError:
        return False
    (folder / ".probe-test").unlink()
    return True


def test_read_only_folder_for_a_non_root_user(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CellamaInputError, match="cannot write"):
            check_destination(ro / "o.csv", "output CSV")
    finally:
        ro.chmod(0o755)
