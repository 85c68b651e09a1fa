"""The load widget in a real viewer: panel report and marker coverage before any embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cellama.core.coverage import label_columns, marker_coverage
from napari_cellama.core.palette import category_colors
from napari_cellama.layers import layer_kind
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
WIDGET = "1. Load Xenium and reference"
TIMEOUT = 120_000


def _widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)


def _set_reference(qtbot, widget, path, label="cell_type"):
    with qtbot.waitSignal(widget.columns_ready, timeout=TIMEOUT) as blocker:
        widget.set_reference_path(path)
    _wait_idle(qtbot, widget)
    widget.set_label_column(label)
    return blocker.args[0]


def _table_rows(widget):
    t = widget.coverage_table
    return [[t.item(i, j).text() for j in range(t.columnCount())] for i in range(t.rowCount())]


@pytest.mark.gui
def test_load_demo_folder_reports_panel_and_coverage(viewer, qtbot, demo_data, tmp_path):
    widget = _widget(viewer)
    columns = _set_reference(qtbot, widget, demo_data.reference_h5ad)
    assert columns == ["cell_type", "phase", "louvain"]  # categorical-like columns only
    widget.set_xenium_path(demo_data.xenium_dir)
    with qtbot.waitSignal(widget.loaded, timeout=TIMEOUT):
        worker = widget.load()
    assert worker is not None  # loading ran in a worker thread
    _wait_idle(qtbot, widget)
    assert widget.last_error is None

    # the run's layers were added, aligned, and the session holds everything for the transfer
    assert [layer_kind(layer) for layer in viewer.layers] == ["morphology", "cells", "centroids"]
    session = get_session(viewer)
    assert session.ready and session.label_key == "cell_type"
    assert session.query.n_obs == demo_data.manifest["n_cells"] and session.query.n_vars == 300
    assert session.reference.n_obs == demo_data.manifest["n_reference_cells"]
    assert session.layer_names == {"cells": "cells", "centroids": "cell centroids", "image": "DAPI"}
    cells = viewer.layers[session.layer_names["cells"]]
    labels = session.label_of_cell
    feats = cells.features.set_index("cell_id")["index"]
    assert (labels.reindex(feats.index) == feats).all()

    # the panel report, before any embedding
    panel = session.panel
    assert panel.n_query_genes == 300 and panel.n_reference_genes == 765 and panel.n_shared == 300
    assert 0 < panel.reference_fraction_shared < 1
    text = widget.summary_label.text()
    for fragment in (
        f"{demo_data.manifest['n_cells']:,} cells",
        "300 genes",
        "Shared genes</b>: 300",
        f"{panel.reference_fraction_shared:.1%}",
        "fewer than 20 detected shared genes",
    ):
        assert fragment in text, fragment
    rows = _table_rows(widget)
    assert len(rows) == 10 and {r[0] for r in rows} == set(
        session.reference.obs["cell_type"].cat.categories
    )
    assert set(session.coverage["cell_type"]) == {r[0] for r in rows}
    # the demo panel was designed with the reference's markers: good coverage everywhere
    assert not session.coverage["low_coverage"].any() and "Every type has" in text

    # transcripts of chosen genes: one colour per gene, count shown
    with qtbot.waitSignal(widget.transcripts_added, timeout=TIMEOUT) as blocker:
        widget.show_transcripts(["CD3E", "MS4A1"])
    _wait_idle(qtbot, widget)
    layer = blocker.args[0]
    assert layer_kind(layer) == "transcripts"
    tx = pd.read_parquet(demo_data.xenium_dir / "transcripts.parquet")
    expected = tx[tx["feature_name"].isin(["CD3E", "MS4A1"]) & (tx["qv"] >= 20)]
    assert len(layer.data) == len(expected) and f"({len(expected):,})" in layer.name
    assert len(np.unique(layer.face_color, axis=0)) == 2
    colors = category_colors(["CD3E", "MS4A1"])  # each gene keeps its stable colour
    for gene in ("CD3E", "MS4A1"):
        sel = (layer.features["gene"] == gene).to_numpy()
        np.testing.assert_allclose(layer.face_color[sel], np.tile(colors[gene], (sel.sum(), 1)))
    np.testing.assert_allclose(
        np.sort(layer.data[:, 0]), np.sort(expected["y_location"].to_numpy()), rtol=1e-6
    )
    # above the limit a subset is shown and the count says so
    widget.max_points_spin.setValue(1000)
    with qtbot.waitSignal(widget.transcripts_added, timeout=TIMEOUT) as blocker:
        widget.show_transcripts(["CD3E", "MS4A1"])
    _wait_idle(qtbot, widget)
    assert len(blocker.args[0].data) == 1000
    assert f"1,000 of {len(expected):,}" in blocker.args[0].name
    assert f"showing 1,000 of {len(expected):,}" in widget.transcripts_label.text()

    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    shot = viewer.screenshot(str(tmp_path / "load_widget.png"), canvas_only=False, flash=False)
    assert shot[..., :3].std() > 10


@pytest.mark.gui
def test_use_open_layers_of_real_crop_flags_low_coverage(viewer, qtbot, crop_dir, demo_data):
    viewer.open(str(crop_dir), plugin=PLUGIN)
    widget = _widget(viewer)
    widget.use_open_layers("cells")
    _set_reference(qtbot, widget, demo_data.reference_h5ad)
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(widget.loaded, timeout=TIMEOUT):
        widget.load()
    _wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers  # the open layers are used, not added twice
    session = get_session(viewer)
    assert session.query.n_obs == 4595 and session.query.n_vars == 477
    assert (session.query.obs["label"] > 0).all()
    cov = session.coverage
    assert cov["low_coverage"].any()  # a bone-marrow panel misses most PBMC markers
    rows = _table_rows(widget)
    low_rows = [r for r in rows if r[3].endswith("low")]
    assert len(low_rows) == int(cov["low_coverage"].sum())
    assert "Low marker coverage" in widget.summary_label.text()
    # the numbers shown are the engine's
    expected = marker_coverage(session.reference, "cell_type", session.panel.shared_genes)
    pd.testing.assert_frame_equal(cov, expected)
    assert session.panel.n_shared == len(
        set(map(str.upper, session.query.var_names))
        & set(map(str.upper, session.reference.var_names))
    )


@pytest.mark.gui
def test_bad_inputs_are_notifications(viewer, qtbot, tmp_path, demo_data):
    widget = _widget(viewer)
    messages = []
    widget.failed.connect(messages.append)
    assert widget.load() is None  # nothing chosen yet
    assert "Xenium output folder" in messages[-1]
    widget.set_xenium_path(tmp_path)
    _set_reference(qtbot, widget, demo_data.reference_h5ad)
    assert widget.load() is None
    assert "is not a Xenium output folder" in messages[-1]
    # a reference that is not an .h5ad: reported when its columns are read
    bad = tmp_path / "ref.h5ad"
    bad.write_text("not hdf5")
    with qtbot.waitSignal(widget.failed, timeout=TIMEOUT):
        widget.set_reference_path(bad)
    _wait_idle(qtbot, widget)
    assert "could not be read as .h5ad" in messages[-1]
    assert widget.label_combo.count() == 0
    # transcripts before any run is loaded
    assert widget.show_transcripts(["CD3E"]) is None and "load a Xenium run first" in messages[-1]


def test_label_columns_offers_categorical_like_only():
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(["a", "b", "a", "c"] * 25),
            "batch": ["x", "y"] * 50,
            "cluster": np.arange(100) % 5,
            "barcode": [f"cell{i}" for i in range(100)],
            "n_counts": np.random.default_rng(0).random(100),
            "constant": ["same"] * 100,
        }
    )
    assert label_columns(obs) == ["cell_type", "batch", "cluster"]


def test_marker_coverage_counts_markers_in_panel():
    import anndata as ad

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(30)]
    x = rng.poisson(1.0, size=(60, 30)).astype(np.float32)
    x[:20, 0:3] += 30  # type A markers: G0-G2
    x[20:40, 3:6] += 30  # type B markers: G3-G5
    x[40:59, 6:9] += 30  # type C markers: G6-G8
    labels = ["A"] * 20 + ["B"] * 20 + ["C"] * 19 + ["D"]  # D has a single cell: untestable
    ref = ad.AnnData(
        X=x, obs=pd.DataFrame({"t": pd.Categorical(labels)}, index=[str(i) for i in range(60)])
    )
    ref.var_names = genes
    cov = marker_coverage(ref, "t", ["g0", "G1", "G2", "G3"], n_markers=3).set_index("cell_type")
    assert (
        set(cov.loc["A", "markers_in_panel"]) == {"G0", "G1", "G2"}
        and cov.loc["A", "fraction"] == 1
    )
    assert cov.loc["B", "n_in_panel"] == 1 and not cov.loc["B", "low_coverage"]
    assert cov.loc["C", "n_in_panel"] == 0 and cov.loc["C", "low_coverage"]
    assert np.isnan(cov.loc["D", "fraction"]) and cov.loc["D", "low_coverage"]
