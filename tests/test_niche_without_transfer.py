"""The niche dock works from the session alone: with NO transfer dock open it shows the niches
of the session's annotation and selecting a niche outlines its cells on the tissue (run under
xvfb-run -a). Also: a plot or niche selection is the one session selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _transfer_fixture import make_xenium_subset

from napari_cellama._constants import CELLS_LAYER_NAME, CONFIDENCE, DISTANCE, TRANSFERRED_TYPE
from napari_cellama.core import Annotation
from napari_cellama.layers import lookup_table
from napari_cellama.session import TransferState, get_session

PLUGIN = "napari-cellama"


@pytest.mark.gui
def test_niche_dock_selects_cells_with_no_transfer_dock(viewer, qtbot, crop_dir, tmp_path):
    from napari.layers import Layer

    from napari_cellama.io.xenium_run import open_xenium_run
    from napari_cellama.layers import xenium_layer_data

    run = open_xenium_run(make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=150))
    for data, kwargs, kind in xenium_layer_data(run):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    session = get_session(viewer)
    session.update(query=run.table, xenium_root=run.root, layer_names={"cells": CELLS_LAYER_NAME})
    # an annotation with saved niches, as an opened session or a script gives it: no transfer dock
    ids = np.asarray(run.table.obs_names, dtype=str)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({TRANSFERRED_TYPE: rng.choice(["T cell", "B cell"], len(ids)), CONFIDENCE: 0.9,
                          DISTANCE: 0.1}, index=ids)
    ann = Annotation(table, label_ids=session.label_of_cell.reindex(ids).to_numpy())
    clustered = ids[: 100]
    ann.set_niche_clusters(pd.Series(np.arange(len(clustered)) % 3, index=clustered).astype(str))
    session.transfer = TransferState(None, ann)

    _, niche = viewer.window.add_plugin_dock_widget(PLUGIN, "3. Niche clusters")
    assert not any(type(w).__name__ == "TransferWidget" for w in viewer.window._qt_window.findChildren(type(niche)))
    assert niche.annotation is ann and niche.legend.names() == ["0", "1", "2"]
    assert "niche clusters" in viewer.layers and session.niche is not None
    cells = viewer.layers[CELLS_LAYER_NAME]

    # clicking the legend row of niche "1" selects its cells, outlined on the tissue
    legend = niche.legend
    rect = legend.tree.visualItemRect(legend.item("1"))
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(legend.tree.viewport(), Qt.LeftButton, pos=QPoint(legend.tree.columnWidth(0) + 5,
                                                                        rect.center().y()))
    want = set(clustered[np.arange(len(clustered)) % 3 == 1])
    assert set(session.selection.ids) == want
    outlines = viewer.layers["selected cells"]
    lut = lookup_table(outlines)
    label_of = pd.Series(cells.features["index"].to_numpy(), index=cells.features["cell_id"].astype(str))
    assert int(lut.sum()) == len(want) and (lut[label_of.reindex(sorted(want)).to_numpy()] == 1).all()
    order = [lay.name for lay in viewer.layers]
    assert order.index("niche clusters") < order.index("selected cells") < order.index(CELLS_LAYER_NAME)
    viewer.reset_view()
    qtbot.wait(200)
    shown = viewer.screenshot(canvas_only=True, flash=False)
    outlines.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)
    outlines.visible = True
    assert shown.shape == hidden.shape  # the outlines are drawn on the tissue
    assert (np.abs(shown[..., :3].astype(int) - hidden[..., :3].astype(int)).max(axis=-1) > 60).sum() > 50

    # another dock's selection is the same selection (a plot point here)
    _, plots = viewer.window.add_plugin_dock_widget(PLUGIN, "Plots", tabify=True)
    assert plots.annotation is ann
    session.selection.select([ids[120]])
    assert int(lut.sum()) == 1 and lut[label_of[ids[120]]] == 1
    niche.select_cluster("2")
    assert set(session.selection.ids) == set(clustered[np.arange(len(clustered)) % 3 == 2])
