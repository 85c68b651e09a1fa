"""Rename and recolour a type in the legend, applied everywhere, and the confidence histogram
beside the threshold slider (issue 17 item 10), in a real viewer (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _hash_embedder import HashEmbedder
from _transfer_fixture import make_xenium_subset

from napari_cellama._constants import CELLS_LAYER_NAME, CONFIDENCE, DISTANCE, TRANSFERRED_TYPE, UNASSIGNED
from napari_cellama._qt.confidence_histogram import ConfidenceHistogram
from napari_cellama.core import Annotation, annotate_by_prototypes
from napari_cellama.core.palette import to_rgba
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"


def _load_run(viewer, root):
    from napari.layers import Layer

    from napari_cellama.io.xenium_run import open_xenium_run
    from napari_cellama.layers import xenium_layer_data

    run = open_xenium_run(root)
    for data, kwargs, kind in xenium_layer_data(run):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    get_session(viewer).update(query=run.table, xenium_root=run.root, layer_names={"cells": CELLS_LAYER_NAME})
    return run


def _painted(layer, code):
    return np.asarray(layer.colormap.map(np.array([code]))[0])


@pytest.mark.gui
def test_rename_and_recolour_reach_every_layer_and_export(viewer, qtbot, crop_dir, tmp_path):
    root = make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=80)
    run = _load_run(viewer, root)
    session = get_session(viewer)
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, protos = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes", tabify=True)
    proto = annotate_by_prototypes(run.table, embedder=HashEmbedder(), top_k=5)
    session.prototypes = proto
    counts = proto.table["cell_type"].astype(str).value_counts().drop(UNASSIGNED, errors="ignore")
    shared = counts.index[0]  # a type both runs have
    ids = np.asarray(run.table.obs_names, dtype=str)
    n = len(ids)
    table = pd.DataFrame({TRANSFERRED_TYPE: np.array([shared, "T cell", "NK cell"], dtype=object)[np.arange(n) % 3],
                          CONFIDENCE: np.linspace(0.0, 0.999, n), DISTANCE: 0.1}, index=ids)
    transfer.show_annotation(Annotation(table))
    ann = transfer.annotation
    legend = transfer.legend

    # ---- the row menu offers rename / colour (not for Unassigned)
    menu = legend.row_menu(shared)
    texts = [a.text() for a in menu.actions()]
    assert texts[0].startswith("Rename") and "Change colour…" in texts and "Select its cells" in texts
    assert not legend.row_menu(UNASSIGNED).actions()[0].isEnabled()

    # ---- rename: legend, layer features (hover), cells features, prototype layer, export
    new = "my renamed type"
    assert legend.rename_type(shared, new) == new
    assert new in legend.names() and shared not in legend.names() and legend.selected() == new
    types_layer = viewer.layers["cell types"]
    assert new in types_layer.features["cell_type"].tolist() and shared not in types_layer.features["cell_type"].tolist()
    cells = viewer.layers["cells"].features.set_index("cell_id")
    assert (cells.loc[ids[::3], "cell_type"].astype(str) == new).all()
    proto_layer = viewer.layers["prototype cell types"]
    cats = proto_layer.metadata["cellama"]["categories"]
    assert new in cats and shared not in cats
    assert shared not in set(session.prototypes.table["cell_type"].astype(str))
    out = pd.read_csv(transfer.export_csv(tmp_path / "cells.csv"), index_col=0)
    assert (out.loc[ids[::3], "cell_type"] == new).all() and shared not in set(out["transferred_type"])
    assert legend.rename_type("T cell", UNASSIGNED) is None and "reserved" in legend.message

    # ---- recolour: the types layer and the prototype layer agree
    assert legend.recolor_type(new, "#123456") == "#123456"
    code = ann.categories.index(new) + 1
    np.testing.assert_allclose(_painted(types_layer, code), to_rgba("#123456"), atol=1e-6)
    proto_layer = viewer.layers["prototype cell types"]
    pcode = proto_layer.metadata["cellama"]["categories"].index(new) + 1
    np.testing.assert_allclose(_painted(proto_layer, pcode), to_rgba("#123456"), atol=1e-6)
    icon = legend.item(new).icon(0).pixmap(14, 14).toImage()
    assert icon.pixelColor(7, 7).name() == "#123456"

    # ---- the confidence histogram beside the slider
    hist = transfer.findChild(ConfidenceHistogram)
    assert hist is not None and hist.isVisibleTo(transfer)
    assert int(hist.counts.sum()) == n and hist.threshold == 0.0 and hist.below() == 0
    transfer.set_threshold(0.5)
    assert hist.threshold == pytest.approx(0.5)
    assert hist.below() == int((table[CONFIDENCE] < 0.5).sum())
    greyed = [b for b in hist.bars if tuple(b.get_facecolor()[:3]) == to_rgba("#7f7f7f")[:3]]
    assert len(greyed) == 25
    # a new annotation is binned afresh
    transfer.show_annotation(Annotation(table.assign(**{CONFIDENCE: 0.95})))
    assert hist.counts.argmax() == 47 and hist.counts.sum() == n
    viewer.window._qt_window.resize(1600, 1000)
    qtbot.wait(50)
    assert hist.canvas.height() == 64
