"""Fine-tuning and marker-prototype panels in a real napari viewer (run under xvfb-run -a).

Set ``NAPARI_CELLAMA_SCREENSHOT_DIR`` to also keep the screenshots (used for docs/finetune.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _transfer_fixture import make_small_reference, make_xenium_subset

from napari_cellama._constants import CELLS_LAYER_NAME, PROTOTYPE_PREFIX
from napari_cellama.core import read_finetune_record
from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
TIMEOUT = 300_000


def _keep(shot_path: Path) -> None:
    target = os.environ.get("NAPARI_CELLAMA_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot_path, Path(target) / shot_path.name)


def _not_blank(img: np.ndarray) -> bool:
    rgb = np.asarray(img)[..., :3].astype(int)
    return rgb.std() > 5


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    return make_small_reference(tmp_path_factory.mktemp("ft_ref") / "ref.h5ad", per_label=12)


def _load_run(viewer, root):
    """Show a Xenium run the way the load panel does (real reader, real layers, session filled)."""
    from napari.layers import Layer

    from napari_cellama.io.xenium_run import open_xenium_run
    from napari_cellama.layers import xenium_layer_data

    run = open_xenium_run(root)
    for data, kwargs, kind in xenium_layer_data(run):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    get_session(viewer).update(query=run.table, xenium_root=run.root,
                               layer_names={"cells": CELLS_LAYER_NAME})
    return run


@pytest.mark.gui
def test_finetune_panel_runs_shows_loss_and_cancels(viewer, qtbot, small_reference, tmp_path):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune model")
    widget.reference.setText(str(small_reference))
    widget._reference_changed()
    assert widget.label_key.findText("bulk_labels") >= 0  # columns read from the file
    widget.label_key.setCurrentText("bulk_labels")
    widget.top_k.setText("6")
    widget.pairs.setValue(48)
    # the training options are folded away until asked for
    assert widget.training_box.isHidden() and not widget.training_toggle.isChecked()
    widget.training_toggle.click()
    assert not widget.training_box.isHidden() and widget.training_toggle.isChecked()
    widget.epochs.setValue(1)
    widget.batch_size.setValue(16)
    widget.augment.setValue(2)
    assert widget.n_pcs.value() == 10
    widget.n_pcs.setValue(8)
    out = tmp_path / "tuned"
    widget.out.setText(str(out))
    p = widget.parameters()
    assert (p["epochs"], p["augment_views"], p["augment_keep"], p["n_pcs"]) == (1, 2, 0.3, 8)
    widget.training_toggle.click()
    assert widget.training_box.isHidden()
    seen = []
    worker = widget.run()
    assert worker is not None and widget.busy
    worker.yielded.connect(lambda v: seen.append((v, widget.status.text())))
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.result is not None, widget.status.text()
    # progress reached the napari bar with steps and loss
    steps = [(v, text) for v, text in seen if v[0] == "fine-tuning" and v[1] > 0]
    assert steps and steps[-1][0][1] == steps[-1][0][2] == 3
    assert "loss" in steps[-1][1]
    assert (out / "modules.json").is_file() and read_finetune_record(out)["params"]["n_pairs"] == 48
    assert read_finetune_record(out)["params"]["pca"]["n_pcs"] == 8
    assert get_session(viewer).finetuned_model == str(out)
    assert "Spearman" in widget.status.text()
    qtbot.wait(200)
    shot = tmp_path / "finetune_panel.png"
    img = viewer.screenshot(str(shot), canvas_only=False, flash=False)
    assert shot.is_file() and _not_blank(img)
    _keep(shot)

    # Cancel between two steps: nothing is written
    out2 = tmp_path / "cancelled"
    widget.out.setText(str(out2))
    widget.pairs.setValue(480)
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.last_progress is not None and widget.last_progress[0] == "fine-tuning"
                    and widget.last_progress[1] >= 1, timeout=TIMEOUT)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.last_progress[1] < widget.last_progress[2]  # stopped early
    assert "cancelled" in widget.status.text()
    assert not out2.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cancelled")]


@pytest.mark.gui
def test_prototypes_panel_annotates_real_xenium_cells(viewer, qtbot, crop_dir, tmp_path):
    root = make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=120)
    _load_run(viewer, root)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes")
    assert widget.use_default.isChecked()
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget.result is not None, widget.status.text()
    cells = viewer.layers[CELLS_LAYER_NAME]
    feats = cells.features
    col = f"{PROTOTYPE_PREFIX}cell_type"
    assert {col, f"{PROTOTYPE_PREFIX}confidence", f"{PROTOTYPE_PREFIX}runner_up"} <= set(feats.columns)
    assert feats[col].notna().all() and feats[f"{PROTOTYPE_PREFIX}confidence"].between(0, 1).all()
    assert "cell_type" not in feats.columns  # the transfer's column is never overwritten
    layer = viewer.layers["prototype cell types"]
    assert set(layer.metadata["cellama"]["categories"]) == set(feats[col])
    assert viewer.layers.selection.active is cells
    params = widget.result.params
    assert (params["cell_genes"], params["rank"], params["top_k"]) == ("markers", "scaled", 5)
    n_blank = int((feats[col] == "Unassigned").sum())
    assert n_blank == params["n_cells_without_sentence_genes"] > 0  # sparse Xenium cells: no marker at all
    text = widget.status.text()
    assert f"{n_blank} cells without any detected marker gene: Unassigned" in text
    assert "markers not in the panel were dropped" in text and "cells per type" in text
    assert "CD34" in widget.status.toolTip() or "dropped" in widget.status.toolTip()  # full report on hover
    spatial = np.asarray(get_session(viewer).query.obsm["spatial"])  # zoom on the 120 cells (microns)
    _camera(viewer).center = (float(spatial[:, 1].mean()), float(spatial[:, 0].mean()))  # napari is (y, x)
    _camera(viewer).zoom = 260.0 / (float(np.ptp(spatial, axis=0).max()) * 1.2)  # ~260 px of canvas
    qtbot.wait(300)
    shot = tmp_path / "prototypes_panel.png"
    img = viewer.screenshot(str(shot), canvas_only=False, flash=False)
    assert _not_blank(img)
    _keep(shot)
    # the transfer-style sentence on request: all genes, by value
    widget.cell_genes.setCurrentIndex(widget.cell_genes.findData("all"))
    widget.rank.setCurrentIndex(widget.rank.findData("expression"))
    widget.top_k.setValue(20)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    params = widget.result.params
    assert (params["cell_genes"], params["rank"], params["top_k"]) == ("all", "expression", 20)
    feats = viewer.layers[CELLS_LAYER_NAME].features
    assert int((feats[col] == "Unassigned").sum()) < n_blank  # any detected gene now makes a sentence
    # no run loaded -> a notification, no worker
    get_session(viewer).update(query=None)
    assert widget.run() is None


@pytest.mark.gui
def test_finetune_form_scrolls_when_docks_share_the_height(viewer, qtbot):
    viewer.window._qt_window.resize(1300, 560)  # a short window: plugin docks are tabbed, not stacked
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune model")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes")  # tabbed with it
    widget.show_training_options(True)
    qtbot.wait(200)
    # the long form scrolls instead of squeezing its rows; Run and Cancel stay in view
    assert widget.form_area.verticalScrollBar().maximum() > 0
    assert widget.epochs.height() >= 16  # rows keep their height (before: squeezed flat)
    assert widget.run_button.isVisible() and not widget.run_button.visibleRegion().isEmpty()


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9; ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
