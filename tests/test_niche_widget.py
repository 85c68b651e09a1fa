"""The niche widget end to end in a real viewer on the demo run (real model, real reader).

Load the demo with widget 1, run the transfer (widget 2, synchronously), then niche
clustering of the transferred ``CD14+ Monocyte`` cells (widget 3, synchronously, the
widget's defaults: k = 10, genes + niche, Leiden 0.3), and check what the user sees and
keeps: the layer, the legend, the heatmap data, the marker table, highlighting by
clicking, re-clustering without re-embedding, the screenshot, the saved session and the
CSV export; finally a run cancelled while it embeds leaves everything as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QPoint, Qt
from sklearn.metrics import adjusted_rand_score

from napari_cellama._constants import CELL_TYPE, NICHE_CLUSTER, NICHE_OTHER_CELLS
from napari_cellama.layers import lookup_table
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
TIMEOUT = 300_000
TYPE = "CD14+ Monocyte"


def _load(viewer, qtbot, demo):
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    _, niche = viewer.window.add_plugin_dock_widget(PLUGIN, "3. Niche clusters", tabify=True)
    with qtbot.waitSignal(load.columns_ready, timeout=TIMEOUT):
        load.set_reference_path(demo.reference_h5ad, "cell_type")
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    load.set_xenium_path(demo.xenium_dir)
    with qtbot.waitSignal(load.loaded, timeout=TIMEOUT):
        load.load()
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    return transfer, niche


def _nonblank(path):
    import imageio.v3 as iio

    img = iio.imread(path)
    return img[..., :3].std() > 5 and len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50


def _pixels_of(img, color, tol=40):
    """Pixels of a screenshot within ``tol`` (0-255) of an RGBA colour in every channel."""
    target = np.asarray(color[:3], dtype=float) * 255
    return int((np.abs(img[..., :3].astype(float) - target).max(axis=-1) < tol).sum())


def _rgba(layer, name):
    """The colour the niche layer paints category ``name`` with."""
    code = layer.metadata["cellama"]["categories"].index(name) + 1
    return np.asarray(layer.colormap.map(np.array([code]))[0])


def _click_row(qtbot, tree, item, column=1):
    rect = tree.visualItemRect(item)
    x = sum(tree.columnWidth(c) for c in range(column)) + 5
    qtbot.mouseClick(tree.viewport(), Qt.LeftButton, pos=QPoint(x, rect.center().y()))


def _click_heatmap_row(widget, row):
    from matplotlib.backend_bases import MouseEvent

    widget.canvas.draw()
    x, y = widget._heat_ax.transData.transform((0, row))
    MouseEvent("button_press_event", widget.canvas, x, y, button=1)._process()


@pytest.mark.gui
def test_niche_widget_cluster_highlight_save_export(viewer, qtbot, demo_data, tmp_path, make_napari_viewer):
    transfer, niche = _load(viewer, qtbot, demo_data)
    assert not niche.run_button.isEnabled()  # no labels yet
    transfer.run(sync=True)
    ann = transfer.annotation
    assert niche.annotation is ann and niche.run_button.isEnabled()
    offered = [niche.types_list.item(i).data(Qt.UserRole) for i in range(niche.types_list.count())]
    assert offered == [str(t) for t in ann.counts().index if str(t) != "Unassigned"]
    assert not niche.recluster_button.isEnabled()

    # ---- defaults, then a run on the transferred CD14+ monocytes
    niche.set_cell_types([TYPE])
    p = niche.parameters()
    assert (p["cell_types"], p["k"], p["radius"], p["mode"], p["resolution"], p["n_clusters"]) == (
        [TYPE], 10, None, "genes+niche", 0.3, None)
    assert "0.3" in niche.resolution_spin.toolTip() and "7 clusters" in niche.resolution_spin.toolTip()
    niche.neighbourhood_combo.setCurrentIndex(1)
    niche.mode_combo.setCurrentIndex(1)
    niche.set_method("kmeans", 4)
    p = niche.parameters()
    assert (p["k"], p["radius"], p["mode"], p["resolution"], p["n_clusters"]) == (None, 30.0, "niche", None, 4)
    assert niche.neighbourhood_stack.currentWidget() is niche.radius_spin
    assert niche.method_stack.currentWidget() is niche.n_clusters_spin
    niche.neighbourhood_combo.setCurrentIndex(0)
    niche.mode_combo.setCurrentIndex(0)
    niche.set_method("leiden", 0.3)
    niche.run(sync=True)
    r = niche.result
    assert r is not None and niche.runner.bar.format() == "done"
    monocytes = ann.cells_of(TYPE)
    assert set(r.table.index) == set(monocytes.astype(str))
    names = [str(c) for c in r.composition.index]
    truth = pd.read_csv(demo_data.truth_csv, index_col="cell_id")
    planted = truth["niche"].reindex(r.table.index)
    ari = adjusted_rand_score(planted, r.clusters.astype(str))
    print(f"\nwidget niches of transferred {TYPE} ({len(r.table)} cells, Leiden 0.3): {len(names)} clusters "
          f"{r.sizes.to_dict()}, ARI vs planted niche {ari:.3f}")
    assert ari > 0.2  # the niches follow the planted domains (labels here are transferred, not true)

    # ---- stored for saving / export, in the session, and on hover
    assert (ann.niche_cluster.reindex(r.table.index).astype(str) == r.clusters.astype(str)).all()
    assert ann.niche_cluster.drop(r.table.index).isna().all()
    session = get_session(viewer)
    assert session.niche.result is r and session.annotation is ann
    assert session.niche.clusters.equals(niche.clusters) and session.niche.colors == niche.colors
    cells = viewer.layers["cells"]
    feats = cells.features.set_index("cell_id")
    cid = r.table.index[0]
    assert feats.loc[cid, NICHE_CLUSTER] == r.clusters.loc[cid]
    assert pd.isna(feats.loc[ann.cell_ids.difference(r.table.index)[0], NICHE_CLUSTER])

    # ---- the layer: clustered cells by cluster, the others grey and dimmed
    layer = viewer.layers["niche clusters"]
    assert layer.visible
    meta = layer.metadata["cellama"]
    lut, cats = lookup_table(layer), meta["categories"]
    labels = ann.label_ids
    painted = np.array([cats[c - 1] for c in lut[labels]], dtype=object)
    is_mono = ann.cell_ids.isin(r.table.index)
    assert (painted[is_mono] == r.clusters.reindex(ann.cell_ids[is_mono]).astype(str).to_numpy()).all()
    assert (painted[~is_mono] == NICHE_OTHER_CELLS).all()
    grey = _rgba(layer, NICHE_OTHER_CELLS)
    assert np.allclose(grey[:3], grey[0]) and grey[3] < 0.6
    for name in names:
        assert _rgba(layer, name)[3] == 1 and np.allclose(_rgba(layer, name), niche.colors[name])
    order = [lay.name for lay in viewer.layers]
    assert order.index("niche clusters") < order.index("selected cells") < order.index("cells") == len(order) - 1
    assert not viewer.layers["cell types"].visible and viewer.layers.selection.active is cells

    # ---- heatmap: cluster x neighbour type fractions, rows sum to 1; marker table filled
    heat = niche.heatmap_data
    assert list(heat.index) == names
    assert np.allclose(heat.sum(axis=1), 1.0)
    assert (heat.columns.isin(r.composition.columns)).all()
    table = niche.markers_table
    assert table.rowCount() == len(r.markers) > 0
    assert {table.item(i, 0).text() for i in range(table.rowCount())} == set(names)
    first = r.markers[r.markers[NICHE_CLUSTER].astype(str) == names[0]]["gene"].iloc[0]
    assert table.item(0, 1).text() == first

    # ---- legend: one row per cluster; unticking hides it on the tissue
    legend = niche.legend
    assert legend.names() == names
    assert [legend.item(n).text(1) for n in names] == [str(int(r.sizes[n])) for n in names]
    legend.set_checked(names[0], False)
    assert _rgba(layer, names[0])[3] == 0 and _rgba(layer, names[1])[3] == 1
    legend.set_hidden(())
    assert _rgba(layer, names[0])[3] == 1

    # ---- clicking a legend row, a heatmap row, a marker row highlights the cluster's cells
    sel_lut = lookup_table(viewer.layers["selected cells"])
    _click_row(qtbot, legend.tree, legend.item(names[1]))
    want = set(niche.cells_of(names[1]))
    assert set(transfer.selected) == want and int(sel_lut.sum()) == len(want) == int(r.sizes[names[1]])
    assert legend.selected() == names[1]
    _click_heatmap_row(niche, 0)
    assert set(transfer.selected) == set(niche.cells_of(names[0]))
    last = table.rowCount() - 1
    niche._on_marker_clicked(last, 1)
    assert set(transfer.selected) == set(niche.cells_of(table.item(last, 0).text()))

    # ---- a screenshot of the overlay with its cluster highlighted; the canvas shows the
    # cluster colours only while the niche layer is shown
    niche.select_cluster(names[0])
    shot = tmp_path / "niche.png"
    viewer.screenshot(str(shot), canvas_only=False)
    assert _nonblank(shot)
    print(f"screenshot: {shot}")
    shown = _pixels_of(viewer.screenshot(canvas_only=True, flash=False), niche.colors[names[0]])
    layer.visible = False
    hidden = _pixels_of(viewer.screenshot(canvas_only=True, flash=False), niche.colors[names[0]])
    layer.visible = True
    print(f"canvas pixels in the colour of niche {names[0]}: {shown} with the layer shown, {hidden} hidden")
    assert shown > 5 * max(hidden, 20)

    # ---- re-cluster: KMeans 3 on the same embeddings (not embedded again)
    niche.set_method("kmeans", 3)
    niche.recluster(sync=True)
    r3 = niche.result
    assert r3 is not r and r3.embeddings is r.embeddings
    assert len(r3.sizes) == 3 and legend.names() == ["0", "1", "2"]
    assert (ann.niche_cluster.reindex(r3.table.index).astype(str) == r3.clusters.astype(str)).all()
    ari3 = adjusted_rand_score(planted, r3.clusters.astype(str))
    print(f"re-clustered with KMeans 3: {r3.sizes.to_dict()}, ARI vs planted niche {ari3:.3f}")
    assert ari3 > 0.4
    assert np.allclose(niche.heatmap_data.sum(axis=1), 1.0)

    # ---- saved session and CSV export carry niche_cluster; reopening shows the niches
    zarr_path = transfer.save_session(tmp_path / "niches.zarr")
    csv = transfer.export_csv(tmp_path / "cells.csv")
    flat = pd.read_csv(csv, index_col="cell_id", dtype={NICHE_CLUSTER: str})
    assert NICHE_CLUSTER in flat.columns
    assert (flat.loc[r3.table.index, NICHE_CLUSTER] == r3.clusters.astype(str)).all()
    assert flat[NICHE_CLUSTER].notna().sum() == len(r3.table)
    v2 = make_napari_viewer(show=True)
    v2.open(str(demo_data.xenium_dir), plugin=PLUGIN)
    _, t2 = v2.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, n2 = v2.window.add_plugin_dock_widget(PLUGIN, "3. Niche clusters", tabify=True)
    assert t2.open_session(zarr_path) is not None
    restored = t2.annotation.niche_cluster
    assert (restored.reindex(r3.table.index).astype(str) == r3.clusters.astype(str)).all()
    assert restored.drop(r3.table.index).isna().all()
    assert n2.legend.names() == ["0", "1", "2"] and "niche clusters" in [lay.name for lay in v2.layers]
    assert set(n2.select_cluster("2")) == set(t2.selected) == set(r3.table.index[r3.clusters == "2"])
    assert n2.result is None and not n2.recluster_button.isEnabled()  # embeddings are not saved

    # ---- a run cancelled while embedding leaves the shown niches as they were
    niche.cache_check.setChecked(False)  # embed for real, whatever is cached
    other = ann.counts().drop(["Unassigned", TYPE], errors="ignore").idxmax()
    niche.set_cell_types([TYPE, str(other)])
    stages = []
    niche.runner.bar.valueChanged.connect(lambda _v: stages.append(niche.runner.bar.format()))
    niche.run()
    qtbot.waitUntil(lambda: any(s.startswith("embedding") for s in stages), timeout=TIMEOUT)
    niche.runner.cancel()
    qtbot.waitUntil(lambda: not niche.runner.busy, timeout=TIMEOUT)
    assert niche.runner.was_cancelled and niche.result is r3
    assert (ann.niche_cluster.reindex(r3.table.index).astype(str) == r3.clusters.astype(str)).all()
    assert niche.legend.names() == ["0", "1", "2"]
    assert CELL_TYPE in ann.table.columns
