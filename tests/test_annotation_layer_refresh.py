"""The ``cell types`` layer follows its Annotation at the cost of what changed (issue 15/16):
no colormap reassignment when the type -> colour mapping is unchanged, no redraw when nothing
changed, only the changed lookup entries written. Real napari layers over a real Xenium subset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _transfer_fixture import make_xenium_subset

from napari_cellama._constants import CELLS_LAYER_NAME, CONFIDENCE, DISTANCE, TRANSFERRED_TYPE, UNASSIGNED
from napari_cellama.core import Annotation
from napari_cellama.layers import (
    annotation_layer_data,
    lookup_table,
    refresh_annotation_colors,
    refresh_annotation_labels,
    xenium_layer_data,
)


@pytest.fixture
def shown(viewer, crop_dir, tmp_path):
    from napari.layers import Layer

    from napari_cellama.io.xenium_run import open_xenium_run

    run = open_xenium_run(make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=60))
    for data, kwargs, kind in xenium_layer_data(run, image=False, centroids=False):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    cells = viewer.layers[CELLS_LAYER_NAME]
    ids = np.asarray(run.table.obs_names, dtype=str)
    n = len(ids)
    table = pd.DataFrame({TRANSFERRED_TYPE: np.array(["B cell", "T cell", "NK cell"], dtype=object)[np.arange(n) % 3],
                          CONFIDENCE: np.linspace(0.0, 0.999, n), DISTANCE: 0.1}, index=ids)
    label_of = pd.Series(cells.features["index"].to_numpy(np.int64), index=cells.features["cell_id"].astype(str))
    ann = Annotation(table, label_ids=label_of.reindex(ids).to_numpy(np.int64))
    layer = viewer.add_layer(Layer.create(*annotation_layer_data(cells, ann)))
    return ann, layer


class _Count:
    def __init__(self, layer):
        self.n = 0
        self._refresh = layer.refresh

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self._refresh(*args, **kwargs)


def _colour_of(layer, code):
    return np.asarray(layer.colormap.map(np.array([code]))[0])


@pytest.mark.gui
def test_threshold_rewrites_the_lookup_and_keeps_the_colormap(shown, monkeypatch):
    ann, layer = shown
    cmap = layer.colormap
    count = _Count(layer)
    monkeypatch.setattr(layer, "refresh", count)

    refresh_annotation_labels(layer, ann)  # nothing changed: no redraw, same colormap
    assert count.n == 0 and layer.colormap is cmap

    ann.set_threshold(0.5)
    refresh_annotation_labels(layer, ann)
    assert layer.colormap is cmap  # the types and their colours did not change
    assert count.n == 1
    lut = lookup_table(layer)
    np.testing.assert_array_equal(lut, ann.label_code_lut())
    low = ann.label_ids[ann.table[CONFIDENCE].to_numpy() < 0.5]
    assert low.size and (lut[low] == ann.categories.index(UNASSIGNED) + 1).all()


@pytest.mark.gui
def test_hiding_or_adding_a_type_replaces_the_colormap(shown):
    ann, layer = shown
    code = ann.categories.index("T cell") + 1
    assert _colour_of(layer, code)[3] > 0
    cmap = layer.colormap

    refresh_annotation_colors(layer, ann)  # unchanged: kept
    assert layer.colormap is cmap
    ann.set_visible("T cell", False)
    refresh_annotation_colors(layer, ann)
    assert layer.colormap is not cmap and _colour_of(layer, code)[3] == 0

    ann.add_type("Plasma cell")
    cells = ann.cell_ids[:2]
    ann.assign(cells, "Plasma cell")
    refresh_annotation_labels(layer, ann)
    assert list(layer.features["cell_type"]) == list(ann.categories)
    plasma = ann.categories.index("Plasma cell") + 1
    assert _colour_of(layer, plasma)[3] > 0
    assert (lookup_table(layer)[ann.label_ids[:2]] == plasma).all()


@pytest.mark.gui
def test_a_zoomed_out_multiscale_view_shows_the_new_labels(viewer, qtbot):
    """napari keeps a copy of the coarsest level; a threshold change must still show there."""
    from napari.layers import Labels, Layer

    from napari_cellama.layers.meta import _meta

    n = 400
    base = np.repeat(np.repeat(np.arange(1, n + 1, dtype=np.uint32).reshape(20, 20), 16, 0), 16, 1)
    ids = np.array([f"c{i}" for i in range(1, n + 1)])
    cells = viewer.add_layer(Labels([base, base[::2, ::2], base[::4, ::4]], multiscale=True, name="cells",
                                    features=pd.DataFrame({"index": np.arange(1, n + 1), "cell_id": ids}),
                                    metadata=_meta("cells", None, 1.0)))
    table = pd.DataFrame({TRANSFERRED_TYPE: np.array(["B cell", "T cell"], dtype=object)[np.arange(n) % 2],
                          CONFIDENCE: np.linspace(0.0, 0.99, n), DISTANCE: 0.1}, index=ids)
    ann = Annotation(table, label_ids=np.arange(1, n + 1))
    layer = viewer.add_layer(Layer.create(*annotation_layer_data(cells, ann)))
    viewer.window.resize(800, 600)
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom = camera.zoom / 8  # far out: napari shows the coarsest level
    qtbot.waitUntil(lambda: layer.data_level == 2, timeout=10_000)
    unassigned = ann.categories.index(UNASSIGNED) + 1
    assert not (np.asarray(layer._slice.image.raw) == unassigned).any()

    ann.set_threshold(0.5)
    refresh_annotation_labels(layer, ann)
    qtbot.wait(50)
    shown = np.asarray(layer._slice.image.raw)
    assert layer.data_level == 2
    assert 0.3 < (shown == unassigned).mean() < 0.7
