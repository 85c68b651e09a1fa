"""Prototypes as a first-class annotation (issue 17 item 9), in a real viewer: the prototype run
becomes the shown annotation (legend with counts, threshold, review, export with
label_source=prototypes) or fills the transfer's Unknown cells; the transfer is never lost.
Run under xvfb-run -a."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _hash_embedder import HashEmbedder
from _transfer_fixture import cellama_tmp, crop, make_xenium_subset  # noqa: F401 - pytest fixtures

from napari_cellama._constants import (
    CELLS_LAYER_NAME,
    CONFIDENCE,
    DISTANCE,
    LABEL_SOURCE,
    REASON_UNKNOWN,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
)
from napari_cellama.core import Annotation, annotate_by_prototypes
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


def _fake_transfer(ids):
    """A transfer table: every third cell Unknown (a type the reference lacks)."""
    n = len(ids)
    types = np.array(["T cell", "B cell", "NK cell"], dtype=object)[np.arange(n) % 3]
    reason = np.where(np.arange(n) % 3 == 2, REASON_UNKNOWN, "")
    return pd.DataFrame({TRANSFERRED_TYPE: types, CONFIDENCE: np.linspace(0.3, 1.0, n), DISTANCE: 0.2,
                         UNASSIGNED_REASON: reason}, index=ids)


@pytest.mark.gui
def test_prototype_run_as_annotation_and_combined(viewer, qtbot, crop_dir, tmp_path):
    root = make_xenium_subset(tmp_path / "xenium", src=crop_dir, n_cells=90)
    run = _load_run(viewer, root)
    session = get_session(viewer)
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, protos = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes", tabify=True)
    box = protos.annotation_box
    assert not box.review_button.isEnabled() and not box.combine_check.isEnabled()

    ids = np.asarray(run.table.obs_names, dtype=str)
    transfer.show_annotation(Annotation(_fake_transfer(ids)))
    base = session.transfer
    result = annotate_by_prototypes(run.table, embedder=HashEmbedder(), top_k=5)
    session.prototypes = result  # as the dock's run does
    assert box.review_button.isEnabled() and box.combine_check.isEnabled() and box.showing() == "transfer"

    # ---- the prototype run as the annotation: legend with counts, threshold, review, export
    box.review_button.click()
    ann = session.annotation
    assert box.showing() == "prototypes" and transfer.annotation is ann and box.back_button.isEnabled()
    counts = ann.counts()
    proto_counts = result.table["cell_type"].astype(str).value_counts()
    for name in proto_counts.index:
        assert counts[name] == proto_counts[name]
    legend = transfer.legend
    assert legend.names() == ann.categories
    row = legend.item(proto_counts.index[0])
    assert row.text(1) == str(proto_counts.iloc[0])  # the legend's count column
    assert (ann.label_source == "prototypes").all()
    assert [step["step"] for step in ann.provenance] == ["prototypes", "threshold"]  # recorded like a transfer
    n0 = int(ann.counts(include_empty=True).get(UNASSIGNED, 0))
    transfer.set_threshold(0.5)
    assert int(ann.counts(include_empty=True)[UNASSIGNED]) > n0  # the threshold acts on the prototype confidence
    transfer.set_threshold(0.0)
    first = proto_counts.index[0]
    transfer.select_type(first)
    assert len(transfer.selected) == proto_counts.iloc[0]
    transfer.assign_selected("Stromal (checked)")
    assert ann.label_source[transfer.selected[0]] == "manual:manual"
    out = transfer.export_csv(tmp_path / "prototypes.csv")
    csv = pd.read_csv(out, index_col=0)
    assert set(csv[LABEL_SOURCE]) == {"prototypes", "manual:manual"}
    assert (csv.loc[csv["cell_type"] == "Stromal (checked)", LABEL_SOURCE] == "manual:manual").all()

    # ---- back to the transfer: it was kept, and the manual labels came along
    edited = list(transfer.selected)
    box.back_button.click()
    assert session.transfer is base and box.showing() == "transfer"
    assert (base.annotation.cell_type[edited] == "Stromal (checked)").all()
    assert (base.annotation.label_source[edited] == "manual:manual").all()

    # ---- transfer + prototypes where the transfer says Unknown
    box.combine_check.setChecked(True)
    comb = session.annotation
    assert box.showing() == "combined" and transfer.annotation is comb
    t = comb.table
    was_unknown = base.annotation.table[UNASSIGNED_REASON].eq(REASON_UNKNOWN)
    filled = was_unknown & (result.table["cell_type"].reindex(t.index) != UNASSIGNED) & (t["source"] != "manual")
    assert filled.sum() > 0
    assert (t.loc[filled, LABEL_SOURCE] == "prototypes").all()
    assert (t.loc[filled, "cell_type"].astype(str) == result.table["cell_type"].reindex(t.index)[filled]).all()
    assert t.loc[~was_unknown & (t["source"] != "manual"), LABEL_SOURCE].eq("transfer").all()
    assert (comb.cell_type[edited] == "Stromal (checked)").all()  # manual labels kept
    assert UNKNOWN not in comb.cell_type[filled].astype(str).tolist()
    assert "prototype labels for" in box.note.text()
    steps = [step["step"] for step in comb.provenance]
    assert steps.index("combine") == steps.index("prototypes") + 1 and steps[-1] == "threshold"
    assert comb.provenance[steps.index("combine")]["prototype_labels_for"] == int((t[LABEL_SOURCE] == "prototypes").sum())
    # the legend and the cell types layer follow the combined annotation
    assert transfer.legend.names() == comb.categories
    types_layer = viewer.layers["cell types"]
    name = str(t.loc[filled, "cell_type"].iloc[0])
    painted = np.asarray(types_layer.colormap.map(np.array([comb.categories.index(name) + 1]))[0])
    np.testing.assert_allclose(painted, comb.color_of(name), atol=1e-6)
    # wider: Unknown, Unassigned and below-threshold cells
    box.where_combo.setCurrentIndex(1)
    wider = session.annotation
    assert wider is not comb and (wider.label_source == "prototypes").sum() >= filled.sum()
    # unticking shows the transfer again
    box.combine_check.setChecked(False)
    assert session.transfer is base


@pytest.mark.gui
def test_real_model_prototypes_fill_the_unknown_cells_of_a_real_transfer(viewer, qtbot, crop):
    """End to end with the real model: a real transfer (pbmc68k subset on 150 bone-marrow cells)
    and a real prototype run from the dock, combined from the dock's check box."""
    from napari_cellama.io import read_reference

    run = _load_run(viewer, crop["xenium"])
    session = get_session(viewer)
    session.update(reference=read_reference(crop["reference"]), label_key="bulk_labels")
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, protos = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes", tabify=True)
    transfer.k_spin.setValue(5)
    transfer.run(sync=True)
    base = session.transfer
    assert base is not None and base.annotation.n_cells == run.table.n_obs
    assert protos.run() is not None
    qtbot.waitUntil(lambda: not protos.busy, timeout=TIMEOUT)
    assert protos.result is not None, protos.status.text()
    box = protos.annotation_box
    box.where_combo.setCurrentIndex(1)  # Unknown and Unassigned cells
    transfer.set_threshold(0.6)
    box.combine_check.setChecked(True)
    comb = session.annotation
    src = comb.label_source
    method = base.result.params.get("method")
    assert set(src) <= {f"transfer:{method}", "prototypes"}
    t = comb.table
    call = t["transfer_call"].astype(str)
    took = src == "prototypes"
    assert took.sum() > 0, t[["transfer_call", "prototype_cell_type", "confidence"]].head()
    assert (call[took].isin([UNKNOWN, UNASSIGNED]) | (base.annotation.table[CONFIDENCE][took] < 0.6)).all()
    assert (t.loc[took, "transferred_type"].astype(str) == t.loc[took, "prototype_cell_type"].astype(str)).all()
    # the one threshold (0.6) acts on the prototype confidence of those cells too
    shown = t.loc[took, "cell_type"].astype(str)
    below = t.loc[took, CONFIDENCE] < 0.6
    assert (shown[below] == UNASSIGNED).all() and (shown[~below] == t.loc[took, "prototype_cell_type"][~below]).all()
    print(f"\nreal transfer + prototypes: {int(took.sum())} of {len(t)} cells labelled by prototypes "
          f"(transfer calls there: {call[took].value_counts().to_dict()})")

