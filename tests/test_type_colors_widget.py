"""One type, one colour: the transfer's ``cell types`` and the ``prototype cell types`` layers
paint a cell type in the same colour (regression: two palettes used to disagree), and the
niche layer's colours are none of the types' (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _transfer_fixture import make_xenium_subset

from napari_cellama._constants import (
    CELL_TYPE,
    CELLS_LAYER_NAME,
    CONFIDENCE,
    DISTANCE,
    TRANSFERRED_TYPE,
    UNASSIGNED,
)
from napari_cellama.core import Annotation
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
TIMEOUT = 300_000


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
def test_a_type_has_one_colour_in_transfer_and_prototype_layers(viewer, qtbot, crop_dir, tmp_path):
    root = make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=120)
    run = _load_run(viewer, root)
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, protos = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes", tabify=True)
    protos.top_k.setValue(20)
    protos.cell_genes.setCurrentIndex(protos.cell_genes.findData("all"))
    assert protos.run() is not None
    qtbot.waitUntil(lambda: not protos.busy, timeout=TIMEOUT)
    assert protos.result is not None, protos.status.text()
    proto_types = sorted(set(protos.result.table[CELL_TYPE].astype(str)) - {UNASSIGNED})
    assert len(proto_types) >= 2

    # a transfer whose reference has other types too, first in sort order (so the palette
    # index of a shared type differs between the two runs)
    ids = np.asarray(run.table.obs_names, dtype=str)
    labels = (["AAA first type", "Aaa second type"] + proto_types[::-1]) * len(ids)
    table = pd.DataFrame({TRANSFERRED_TYPE: labels[: len(ids)], CONFIDENCE: 0.9, DISTANCE: 0.1}, index=ids)
    transfer.show_annotation(Annotation(table, types=sorted(set(labels))))
    types_layer = viewer.layers["cell types"]
    proto_layer = viewer.layers["prototype cell types"]
    proto_codes = proto_layer.metadata["cellama"]["categories"]
    ann = transfer.annotation
    for t in proto_types:
        in_transfer = _painted(types_layer, ann.categories.index(t) + 1)
        in_prototypes = _painted(proto_layer, proto_codes.index(t) + 1)
        np.testing.assert_allclose(in_transfer, in_prototypes, atol=1e-6, err_msg=t)
        np.testing.assert_allclose(in_transfer, ann.color_of(t), atol=1e-6)
    # every napari-cellama layer's metadata is a plain, serialisable descriptor (no live tables)
    import json

    from napari_cellama.layers import layer_info

    described = [layer.name for layer in viewer.layers if layer_info(layer)]
    assert {"cell types", "confidence", "distance to reference", "prototype cell types"} <= set(described)
    for layer in viewer.layers:
        json.dumps(layer_info(layer), default=str)  # Paths and numbers only need str()
        assert not any(isinstance(v, np.ndarray) for v in layer_info(layer).values())
    # the reverse order: prototypes re-run after the transfer keep the transfer's colours
    ann.set_color(proto_types[0], "#102030")
    assert protos.run() is not None
    qtbot.waitUntil(lambda: not protos.busy, timeout=TIMEOUT)
    proto_layer = viewer.layers["prototype cell types"]
    code = proto_layer.metadata["cellama"]["categories"].index(proto_types[0]) + 1
    np.testing.assert_allclose(_painted(proto_layer, code), _painted(types_layer, ann.categories.index(proto_types[0]) + 1),
                               atol=1e-6)
