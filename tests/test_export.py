"""Exports read back with the library that owns each format, session restore, and the CLI.

In-process exports use one real transfer (offline MiniLM) from the demo's reference to 150
cells of the demo's Xenium run; the CLI test runs ``napari-cellama transfer`` on 150 cells
of the real Xenium bone-marrow crop with a pbmc68k_reduced reference (``_transfer_fixture``).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata
from _transfer_fixture import DEMO_LABEL_KEY, LABEL_KEY, cellama_tmp, crop, transfer  # noqa: F401

from napari_cellama._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    LABEL_ID,
    NICHE_CLUSTER,
    OBSM_EMBEDDING,
    REASON_UNKNOWN,
    SOURCE,
    SOURCE_MANUAL,
    SPATIALDATA_REFERENCE_TABLE,
    SPATIALDATA_TABLE,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
    UNS_KEY,
)
from napari_cellama.core import Annotation
from napari_cellama.io import (
    load_session,
    read_xenium,
    write_cells_csv,
    write_explorer_csv,
    write_h5ad,
    write_spatialdata,
)
from napari_cellama.validators import CellamaInputError

ODD_NAME = 'Stromal, "CXCL12-abundant"'  # a comma and quotes: must survive CSV quoting


@pytest.fixture
def edited(transfer):
    """An annotation with a threshold, manual edits (one new, oddly named type), a hidden type."""
    result, _, _ = transfer
    ann = Annotation(result.table)
    ann.set_threshold(min_confidence=float(np.unique(result.table[CONFIDENCE])[3]))
    ann.assign(ann.cell_ids[:6], ODD_NAME)
    ann.assign(ann.cell_ids[4:10], ann.types[0])
    ann.assign(ann.cell_ids[20:22], "CD34+/progenitor")  # a '/' in a type name
    ann.undo()
    ann.set_visible(ann.types[1], False)
    ann.set_niche_clusters(pd.Series(np.arange(ann.n_cells) % 4, index=ann.cell_ids))
    return ann


def _no_temp_leftovers(folder: Path):
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_spatialdata_zarr_round_trip(tmp_path, transfer, edited):
    result, _, paths = transfer
    out = tmp_path / "session.zarr"
    assert write_spatialdata(out, edited, result, xenium=paths["xenium"]) == out.resolve()
    _no_temp_leftovers(tmp_path)

    sd = spatialdata.read_zarr(out)
    assert "cell_labels" in sd.labels and "cell_boundaries" in sd.shapes
    table = sd.tables[SPATIALDATA_TABLE]
    attrs = table.uns["spatialdata_attrs"]
    assert attrs["region"] == "cell_labels" and attrs["instance_key"] == "cell_labels"
    assert list(table.obs_names) == list(edited.cell_ids)
    # obs: per-cell results, with the manual edits and their source
    exp = edited.table
    for col in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, "runner_up", "nearest_reference", "sentence"):
        np.testing.assert_array_equal(table.obs[col].astype(str).to_numpy(), exp[col].astype(str).to_numpy())
    np.testing.assert_allclose(table.obs[CONFIDENCE], exp[CONFIDENCE], rtol=1e-6)
    np.testing.assert_allclose(table.obs[DISTANCE], exp[DISTANCE], rtol=1e-6)
    assert (table.obs[SOURCE] == SOURCE_MANUAL).sum() == int(edited.manual_mask.sum()) == 10
    assert table.obs[CELL_TYPE].astype(str).str.contains(UNASSIGNED).any()
    # the label ids link each row to its pixels in the labels raster
    raster = np.asarray(sd.labels["cell_labels"]["scale0"]["image"])
    np.testing.assert_array_equal(table.obs[LABEL_ID].to_numpy(), table.obs["cell_labels"].to_numpy())
    assert set(np.unique(raster)) - {0} == set(table.obs["cell_labels"])
    # counts of the run as X, embeddings in obsm
    xen = read_xenium(paths["xenium"], table_only=True).tables["table"]
    assert table.n_vars == xen.n_vars
    np.testing.assert_array_equal(table.X.toarray(), xen.X.toarray())
    np.testing.assert_allclose(table.obsm[OBSM_EMBEDDING], result.query_embeddings, rtol=1e-6)
    # uns: JSON text that parses back
    uns = table.uns[UNS_KEY]
    params = json.loads(uns["params"])
    assert params["label_key"] == DEMO_LABEL_KEY and params["k"] == 5
    assert params["min_confidence"] == pytest.approx(edited.min_confidence)
    assert json.loads(uns["colors"]) == edited.hex_colors
    history = json.loads(uns["history"])
    assert [h["after"] for h in history] == [ODD_NAME, edited.types[0]]
    assert json.loads(uns["panel"])["n_shared"] == result.panel.n_shared
    assert json.loads(uns["inputs"])["query"] == str(Path(paths["xenium"]).resolve())
    cats = list(table.obs[CELL_TYPE].cat.categories)
    assert list(table.uns[f"{CELL_TYPE}_colors"]) == [edited.hex_colors[c] for c in cats]
    # reference embeddings and labels for the UMAP panel
    ref = sd.tables[SPATIALDATA_REFERENCE_TABLE]
    np.testing.assert_allclose(ref.obsm[OBSM_EMBEDDING], result.reference_embeddings, rtol=1e-6)
    assert list(ref.obs[CELL_TYPE].astype(str)) == list(result.reference_labels.astype(str))


def test_load_session_restores_everything(tmp_path, transfer, edited):
    result, _, paths = transfer
    out = tmp_path / "session.zarr"
    write_spatialdata(out, edited, result, xenium=paths["xenium"])
    s = load_session(out)
    ann = s.annotation
    for col in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE):
        np.testing.assert_array_equal(ann.table[col].astype(str), edited.table[col].astype(str))
    assert ann.hex_colors == edited.hex_colors and ann.categories == edited.categories
    assert ann.min_confidence == pytest.approx(edited.min_confidence)
    assert ann.max_distance == edited.max_distance
    assert ann.hidden == edited.hidden
    assert ann.history_records() == edited.history_records()
    assert ann.n_redo == edited.n_redo == 1
    np.testing.assert_array_equal(ann.label_ids, s.adata.obs["cell_labels"].to_numpy())
    np.testing.assert_array_equal(ann.niche_cluster.astype(str), edited.niche_cluster.astype(str))
    np.testing.assert_allclose(s.embeddings, result.query_embeddings, rtol=1e-6)
    np.testing.assert_allclose(s.reference_embeddings, result.reference_embeddings, rtol=1e-6)
    assert s.params["label_key"] == DEMO_LABEL_KEY
    assert s.panel["n_shared"] == result.panel.n_shared
    assert "cell_labels" in s.sdata.labels
    # the restored session keeps working: redo, undo, threshold, re-export
    ann.redo()
    assert (ann.cell_type.iloc[20:22] == "CD34+/progenitor").all()
    while ann.undo():
        pass
    assert not ann.manual_mask.any()
    ann.set_threshold(0.0)
    expected = result.table[TRANSFERRED_TYPE].astype(str).where(  # cells the transfer called Unknown stay so
        result.table[UNASSIGNED_REASON].astype(str) != REASON_UNKNOWN, UNKNOWN)
    np.testing.assert_array_equal(ann.cell_type.astype(str), expected)
    tr = s.transfer_result()
    assert tr.panel.n_shared == result.panel.n_shared
    write_spatialdata(out, ann, tr, sdata=s.sdata, overwrite=True)  # saving over the opened zarr
    _no_temp_leftovers(tmp_path)
    again = load_session(out)
    assert not again.annotation.manual_mask.any()
    assert "cell_labels" in again.sdata.labels and "cell_boundaries" in again.sdata.shapes


def test_zarr_destination_rules(tmp_path, transfer, edited):
    result, _, paths = transfer
    out = tmp_path / "s.zarr"
    write_spatialdata(out, edited, result)  # no Xenium: the table alone
    sd = spatialdata.read_zarr(out)
    assert set(sd.tables) == {SPATIALDATA_TABLE, SPATIALDATA_REFERENCE_TABLE} and not sd.labels
    with pytest.raises(CellamaInputError, match="already exists"):
        write_spatialdata(out, edited, result)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("keep me")
    with pytest.raises(CellamaInputError, match="not a zarr store"):
        write_spatialdata(tmp_path / "folder", edited, result, overwrite=True)
    assert (tmp_path / "folder" / "notes.txt").read_text() == "keep me"
    with pytest.raises(CellamaInputError, match="does not exist"):
        write_spatialdata(tmp_path / "missing" / "s.zarr", edited, result)
    # never inside a Xenium input folder, whatever the writer
    run = tmp_path / "run"
    shutil.copytree(paths["xenium"], run)
    before = sorted(p.name for p in run.rglob("*"))
    for write, name in ((write_spatialdata, "s.zarr"), (write_h5ad, "c.h5ad"),
                        (write_explorer_csv, "g.csv"), (write_cells_csv, "c.csv")):
        for dest in (run / name, run / "analysis" / name):
            with pytest.raises(CellamaInputError, match="inside the Xenium input folder"):
                write(dest, edited)
    with pytest.raises(CellamaInputError, match="inside the input"):
        write_spatialdata(tmp_path / "s2.zarr", edited, result, sources=[tmp_path])
    assert sorted(p.name for p in run.rglob("*")) == before
    _no_temp_leftovers(tmp_path)


def test_h5ad_round_trip(tmp_path, transfer, edited):
    result, query, _ = transfer
    out = write_h5ad(tmp_path / "cells.h5ad", edited, result, query=query)
    _no_temp_leftovers(tmp_path)
    a = ad.read_h5ad(out)
    assert list(a.obs_names) == list(edited.cell_ids)
    np.testing.assert_array_equal(a.X.toarray(), query.X.toarray())
    np.testing.assert_array_equal(a.obsm["spatial"], query.obsm["spatial"])
    np.testing.assert_allclose(a.obsm[OBSM_EMBEDDING], result.query_embeddings, rtol=1e-6)
    exp = edited.table
    for col in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, NICHE_CLUSTER):
        np.testing.assert_array_equal(a.obs[col].astype(str).to_numpy(), exp[col].astype(str).to_numpy())
    assert "transcript_counts" in a.obs  # the query's own columns are kept
    s = load_session(out)  # an .h5ad restores the session too (without the raster)
    assert s.annotation.history_records() == edited.history_records() and s.sdata is None
    # without a query: results only
    b = ad.read_h5ad(write_h5ad(tmp_path / "bare.h5ad", edited, result))
    assert b.n_vars == 0 and OBSM_EMBEDDING in b.obsm


def test_explorer_csv_format(tmp_path, edited):
    out = write_explorer_csv(tmp_path / "groups.csv", edited)
    raw = out.read_text(encoding="utf-8")
    assert raw.splitlines()[0] == "cell_id,group,color"  # header exactly, unquoted
    assert "\r" not in raw
    rows = list(csv.reader(raw.splitlines()))
    assert all(len(r) == 3 for r in rows)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["cell_id", "group", "color"]
    assert list(df["cell_id"]) == list(edited.cell_ids)
    assert list(df["group"]) == list(edited.cell_type.astype(str))
    assert ODD_NAME in set(df["group"]) and UNASSIGNED in set(df["group"])
    assert f'"{ODD_NAME.replace(chr(34), chr(34) * 2)}"' in raw  # quoted only where needed
    assert not raw.splitlines()[1].startswith('"')
    colors = edited.hex_colors
    assert all(df["color"] == df["group"].map(colors))
    assert df["color"].str.fullmatch(r"#[0-9a-f]{6}").all()
    # niche clusters as groups, and the two-column variant
    niche = pd.read_csv(write_explorer_csv(tmp_path / "niche.csv", edited, column=NICHE_CLUSTER, colors=False),
                        dtype=str)
    assert list(niche.columns) == ["cell_id", "group"]
    assert list(niche["group"]) == [str(i % 4) for i in range(edited.n_cells)]


def test_cells_csv_round_trip(tmp_path, edited):
    out = write_cells_csv(tmp_path / "cells.csv", edited)
    df = pd.read_csv(out, index_col=CELL_ID, keep_default_na=False)
    exp = edited.table
    assert list(df.index) == list(exp.index)
    assert list(df.columns) == [c for c in exp.columns]
    for col in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, "sentence"):
        assert list(df[col].astype(str)) == list(exp[col].astype(str))
    np.testing.assert_allclose(df[CONFIDENCE], exp[CONFIDENCE], rtol=1e-5)
    assert list(df[NICHE_CLUSTER].astype(str)) == list(exp[NICHE_CLUSTER].astype(str))
    assert LABEL_ID not in df  # no label ids were set on this annotation


@pytest.mark.filterwarnings("ignore:zarr v3 autosharding")
def test_load_session_refuses_foreign_data(tmp_path, transfer):
    _, _, paths = transfer
    with pytest.raises(CellamaInputError, match="not found"):
        load_session(tmp_path / "nope.zarr")
    plain = tmp_path / "plain.zarr"
    read_xenium(paths["xenium"], labels=True, image=False).write(plain)
    with pytest.raises(CellamaInputError, match="not written by napari-cellama"):
        load_session(plain)
    (tmp_path / "dir").mkdir()
    with pytest.raises(CellamaInputError, match="not a SpatialData zarr"):
        load_session(tmp_path / "dir")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_cellama.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_cli_exports_read_back(tmp_path, crop):
    paths = crop
    out = tmp_path / "labels.csv"
    groups, zarr_dir, h5ad = tmp_path / "groups.csv", tmp_path / "run.zarr", tmp_path / "cells.h5ad"
    r = _cli("transfer", paths["xenium"], "--reference", paths["reference"], "--label-key", LABEL_KEY,
             "--neighbors", "5", "--out", out, "--explorer-csv", groups, "--zarr", zarr_dir, "--h5ad", h5ad)
    assert r.returncode == 0, r.stderr
    labels = pd.read_csv(out, index_col=CELL_ID)
    assert len(labels) == 150
    g = pd.read_csv(groups, dtype=str)
    assert list(g.columns) == ["cell_id", "group", "color"]
    assert list(g["group"]) == list(labels.loc[g["cell_id"], CELL_TYPE].astype(str))
    sd = spatialdata.read_zarr(zarr_dir)
    assert "cell_labels" in sd.labels and "cell_boundaries" in sd.shapes
    t = sd.tables[SPATIALDATA_TABLE]
    assert t.uns["spatialdata_attrs"]["region"] == "cell_labels"
    assert list(t.obs[CELL_TYPE].astype(str)) == list(labels.loc[t.obs_names, CELL_TYPE].astype(str))
    assert t.obsm[OBSM_EMBEDDING].shape[0] == 150
    a = ad.read_h5ad(h5ad)
    assert a.n_obs == 150 and a.n_vars == t.n_vars
    np.testing.assert_allclose(a.obs[CONFIDENCE], labels.loc[a.obs_names, CONFIDENCE], rtol=1e-5)
    s = load_session(zarr_dir)
    assert s.inputs["query"] == str(Path(paths["xenium"]).resolve())
    assert "wrote SpatialData" in r.stderr and r.stdout == ""


def test_cli_refuses_export_into_the_xenium_folder_before_running(tmp_path, crop):
    r = _cli("transfer", crop["xenium"], "--reference", crop["reference"],
             "--label-key", LABEL_KEY, "--out", tmp_path / "labels.csv",
             "--zarr", crop["xenium"] / "analysis" / "cellama.zarr")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "inside the Xenium input folder" in lines[0]
    assert not (crop["xenium"] / "analysis" / "cellama.zarr").exists()
    assert not (tmp_path / "labels.csv").exists()
