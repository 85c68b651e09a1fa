"""The transfer widget end to end in a real viewer on the demo run (real model, real reader).

One run of the transfer (the demo's 1,376 cells and 353 reference cells with the real
model) is shared by the checks below; the cancel test starts a second run and stops it.
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from napari_cellama._constants import CELL_TYPE, SOURCE, SOURCE_MANUAL, SPATIALDATA_TABLE, UNASSIGNED
from napari_cellama.layers import lookup_table
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
TIMEOUT = 300_000


def _load(viewer, qtbot, demo):
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    _, plots = viewer.window.add_plugin_dock_widget(PLUGIN, "Plots")
    with qtbot.waitSignal(load.columns_ready, timeout=TIMEOUT):
        load.set_reference_path(demo.reference_h5ad, "cell_type")
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    load.set_xenium_path(demo.xenium_dir)
    with qtbot.waitSignal(load.loaded, timeout=TIMEOUT):
        load.load()
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    return load, transfer, plots


def _nonblank(path):
    import imageio.v3 as iio

    img = iio.imread(path)
    return img[..., :3].std() > 5 and len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50


@pytest.mark.gui
def test_transfer_review_export_and_restore(viewer, qtbot, demo_data, tmp_path, make_napari_viewer):
    load, widget, plots = _load(viewer, qtbot, demo_data)
    assert widget.run_button.isEnabled()

    # ---- run (synchronously in tests) and judge against the planted truth
    widget.run(sync=True)
    ann = widget.annotation
    truth = pd.read_csv(demo_data.truth_csv, index_col="cell_id")[CELL_TYPE].astype(str)
    pred = ann.cell_type.reindex(truth.index).astype(str)
    accuracy = float((pred == truth).mean())
    majority = float(truth.value_counts(normalize=True).iloc[0])
    print(f"\ndemo transfer accuracy vs planted truth: {accuracy:.3f} (majority class {majority:.3f})")
    assert accuracy > majority + 0.3
    names = [layer.name for layer in viewer.layers]
    for name in ("cell types", "confidence", "distance to reference", "selected cells"):
        assert name in names
    assert names[-1] == "cells" and viewer.layers.selection.active.name == "cells"
    assert viewer.layers["confidence"].colorbar.visible

    # ---- hover data: the cells layer's features carry the results, keyed by cell_id
    cells = viewer.layers["cells"]
    feats = cells.features.set_index("cell_id")
    for col in ("cell_type", "confidence", "runner_up", "sentence", "source"):
        assert col in feats.columns
    cid = ann.cell_ids[0]
    assert feats.loc[cid, "cell_type"] == ann.cell_type.loc[cid]
    xy = demo_query_xy(widget, cid)
    status = cells.get_status((xy[1], xy[0]), world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert str(ann.cell_type.loc[cid]) in text and cid in text

    # ---- legend: one row per type, ticking hides a type (its colour becomes transparent)
    legend = widget.legend
    assert legend.names() == list(ann.categories)
    types_layer = viewer.layers["cell types"]
    shown = ann.counts().index[ann.counts().index != UNASSIGNED][0]
    code = list(ann.categories).index(shown) + 1
    legend.set_checked(shown, False)
    assert not ann.is_visible(shown)
    assert types_layer.colormap.map(np.array([code]))[0][3] == 0
    legend.set_checked(shown, True)
    assert types_layer.colormap.map(np.array([code]))[0][3] > 0
    legend.select_type(shown)
    legend.show_only_selected()
    assert ann.hidden == frozenset(set(ann.categories) - {shown})
    legend._show_all()

    # ---- threshold slider relabels live (no re-embedding), painted raster follows
    n_before = int((ann.cell_type == UNASSIGNED).sum())
    widget.threshold_slider.setValue(70)
    n_after = int((ann.cell_type == UNASSIGNED).sum())
    assert n_after == int((ann.table["confidence"] < 0.7).sum()) > n_before
    lut = lookup_table(types_layer)
    low = ann.cell_ids[ann.table["confidence"].to_numpy() < 0.7][0]
    assert lut[ann.label_ids[ann.cell_ids.get_loc(low)]] == 1  # code of Unassigned + 1
    assert f"{n_after:,} cells" in widget.threshold_label.text()
    widget.threshold_slider.setValue(0)

    # ---- one manual edit by polygon selection, then undo / redo
    xy_all = np.asarray(get_session(viewer).query.obsm["spatial"])
    x0, y0 = np.percentile(xy_all, 20, axis=0)
    x1, y1 = np.percentile(xy_all, 45, axis=0)
    widget.start_polygons()
    shapes = viewer.layers["selection polygons"]
    shapes.add_polygons([np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])])
    n_sel = widget.select_in_polygons()
    inside = (xy_all[:, 0] > x0) & (xy_all[:, 0] < x1) & (xy_all[:, 1] > y0) & (xy_all[:, 1] < y1)
    assert n_sel == int(inside.sum()) > 0
    sel_lut = lookup_table(viewer.layers["selected cells"])
    assert int(sel_lut.sum()) == n_sel
    before = ann.cell_type.copy()
    widget.assign_selected("Stromal (manual)")
    edited = widget.selected.copy()
    assert (ann.cell_type.loc[widget.selected] == "Stromal (manual)").all()
    assert (ann.source.loc[widget.selected] == SOURCE_MANUAL).all()
    assert "Stromal (manual)" in legend.names()
    assert cells.features.set_index("cell_id").loc[widget.selected[0], "cell_type"] == "Stromal (manual)"
    widget.undo()
    assert (ann.cell_type.astype(str) == before.astype(str)).all()
    widget.redo()
    assert (ann.cell_type.loc[edited] == "Stromal (manual)").all()

    # ---- plots: UMAP (click selects the cell on the tissue), composition, contingency
    plots.compute_map(sync=True)
    assert set(plots.map["dataset"]) == {"query", "reference"}
    picked = plots.select_point(0)
    assert list(widget.selected) == [picked]
    plots.view_combo.setCurrentText("contingency")
    other = plots.other_combo.currentText()
    table = plots.contingency_table(other)
    assert np.allclose(table.sum(axis=1), 1)
    plots.view_combo.setCurrentText("composition")

    # ---- a screenshot that shows the painted tissue
    shot = tmp_path / "transfer.png"
    viewer.screenshot(str(shot), canvas_only=False)
    assert _nonblank(shot)

    # ---- exports, each read back by the library that owns the format
    zarr_path = widget.save_session(tmp_path / "annotation.zarr")
    h5ad_path = widget.export_h5ad(tmp_path / "cells.h5ad")
    explorer = widget.export_explorer_csv(tmp_path / "groups.csv")
    csv = widget.export_csv(tmp_path / "cells.csv")
    import spatialdata

    sdata = spatialdata.read_zarr(zarr_path)
    table_sd = sdata.tables[SPATIALDATA_TABLE]
    assert "X_cellama" in table_sd.obsm and table_sd.n_obs == ann.n_cells
    adata = ad.read_h5ad(h5ad_path)
    assert (adata.obs.loc[edited, SOURCE] == SOURCE_MANUAL).all()
    assert (adata.obs[SOURCE] == SOURCE_MANUAL).sum() == len(edited)
    groups = pd.read_csv(explorer)
    assert list(groups.columns[:2]) == ["cell_id", "group"] and len(groups) == ann.n_cells
    flat = pd.read_csv(csv)
    assert flat["cell_id"].is_unique and len(flat) == ann.n_cells

    # ---- reopening the zarr restores layers, legend and manual edits in a new viewer
    v2 = make_napari_viewer(show=True)
    v2.open(str(demo_data.xenium_dir), plugin=PLUGIN)
    _, w2 = v2.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    saved = w2.open_session(zarr_path)
    assert saved is not None
    ann2 = w2.annotation
    assert (ann2.cell_type.reindex(ann.cell_ids).astype(str) == ann.cell_type.astype(str)).all()
    assert (ann2.source.reindex(ann.cell_ids).astype(str) == ann.source.astype(str)).all()
    assert w2.legend.names() == legend.names()
    assert "cell types" in [layer.name for layer in v2.layers]


def demo_query_xy(widget, cell_id):
    q = widget.session.query
    return np.asarray(q.obsm["spatial"])[q.obs_names.get_loc(cell_id)]


@pytest.mark.gui
def test_cancel_mid_embedding_keeps_previous_results(viewer, qtbot, demo_data):
    load, widget, _ = _load(viewer, qtbot, demo_data)
    session = get_session(viewer)
    # previous results: a quick run on a small reference
    reference_full, query_full = session.reference, session.query
    session.reference = reference_full[:60].copy()
    session.query = query_full[:40].copy()
    widget.run(sync=True)
    previous = widget.annotation
    layers_before = [layer.name for layer in viewer.layers]
    types_before = previous.cell_type.copy()

    # a long run, cancelled once it is embedding
    session.query, session.reference = query_full, reference_full
    stages = []
    widget.runner.bar.valueChanged.connect(lambda _v: stages.append(widget.runner.bar.format()))
    widget.cache_check.setChecked(False)  # embed for real, whatever earlier tests cached
    widget.run()
    qtbot.waitUntil(lambda: any(s.startswith("embedding") for s in stages), timeout=TIMEOUT)
    t0 = time.perf_counter()
    widget.runner.cancel()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=TIMEOUT)
    stopped_in = time.perf_counter() - t0
    print(f"\ncancel took {stopped_in:.1f} s")
    assert widget.runner.was_cancelled
    assert widget.annotation is previous
    assert [layer.name for layer in viewer.layers] == layers_before
    assert (widget.annotation.cell_type.astype(str) == types_before.astype(str)).all()
    assert widget.runner.bar.format() == "cancelled"
