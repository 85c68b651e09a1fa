"""Issue 17 item 2: re-running the transfer never discards work (real viewer, fake embedder).

A re-run over an annotation with manual labels, a moved threshold and niches asks (Carry
edits over / Discard / Cancel), carries the manual labels over per cell with their reasons,
keeps the replaced run as ``session.previous_transfer`` and compares run A with run B.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _dock_fixture import TRANSFER, load_demo, use_fake_transfer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_cellama._constants import UNASSIGNED
from napari_cellama._qt.transfer_rerun import DISCARD, rerun_question, unsaved_work
from napari_cellama.session import get_session


def _click_when_asked(which: str, seen: list) -> None:
    """Answer the modal question with button ``which`` once it is up."""
    def answer():
        box = QApplication.activeModalWidget()
        if box is None or not hasattr(box, "carry_button"):
            QTimer.singleShot(20, answer)
            return
        seen.append(box.text())
        getattr(box, f"{which}_button").click()
    QTimer.singleShot(0, answer)


@pytest.mark.gui
def test_rerun_asks_carries_keeps_and_compares(viewer, qtbot, demo_data, monkeypatch):
    use_fake_transfer(monkeypatch)
    widget = load_demo(viewer, qtbot, demo_data)[TRANSFER]
    session = get_session(viewer)
    assert session.running == ()
    widget.run(sync=True)
    first = widget.annotation
    assert session.previous_transfer is None and not widget.compare_button.isEnabled()
    assert unsaved_work(first) == []

    # ---- a re-run with no work asks nothing, and keeps the replaced run
    widget.run(sync=True)
    assert session.previous_transfer.annotation is first and widget.compare_button.isEnabled()
    base = widget.annotation

    # ---- work: manual labels with two reasons (one reviewed), a threshold, niches
    ids = base.cell_ids
    bs, polygon, reviewed = ids[:5], ids[5:12], ids[12:15]
    base.assign(bs, "CD19+ B", reason="polygon")
    base.assign(polygon, "my new type", reason="cluster")
    base.assign(reviewed, "CD14+ Monocyte", review=True)
    widget.set_threshold(0.4)
    niches = pd.Series(np.where(np.arange(300) % 2, "1", "2"), index=ids[100:400])
    base.set_niche_clusters(niches)
    work = unsaved_work(base)
    assert len(work) == 3 and "15 manually labelled cells" in work[0]
    n_unassigned = int(base.counts(include_empty=True)[UNASSIGNED])

    # ---- the question: its three answers; Cancel leaves everything as it is
    box = rerun_question(widget, work)
    assert [b.text() for b in (box.carry_button, box.discard_button)] == ["Carry edits over", "Discard"]
    assert "15 manually labelled cells" in box.text()
    seen: list = []
    _click_when_asked("cancel", seen)
    assert widget.run(sync=True) is None
    assert seen and widget.annotation is base and session.previous_transfer.annotation is first
    assert "cancelled" in widget.status.text()

    # ---- Carry edits over (answered in the dialog): per cell, reasons kept, threshold, niches
    _click_when_asked("carry", seen)
    widget.run(sync=True)
    new = widget.annotation
    assert new is not base and session.previous_transfer.annotation is base
    assert (new.cell_type.loc[bs] == "CD19+ B").all()
    assert (new.cell_type.loc[polygon] == "my new type").all() and "my new type" in widget.legend.names()
    source = new.label_source
    assert (source.loc[bs] == "manual:carried:polygon").all()
    assert (source.loc[polygon] == "manual:carried:cluster").all()
    assert (source.loc[reviewed] == "manual:carried:manual").all()
    assert new.reviewed.loc[reviewed].all() and not new.reviewed.loc[bs].any()
    assert int(np.count_nonzero(new.manual_mask)) == 15
    assert new.min_confidence == pytest.approx(0.4) and widget.threshold_slider.value() == 40
    assert int(new.counts(include_empty=True)[UNASSIGNED]) == n_unassigned
    assert new.niche_cluster.dropna().equals(niches.astype(new.niche_cluster.dtype))
    assert new.can_undo  # the carried labels are edits of the new run: undoable

    # ---- compare run A (base) with run B (new): same run and same work, so every cell agrees
    dialog = widget.compare_runs()
    assert dialog.table.to_numpy().sum() == new.n_cells and dialog.agreement == pytest.approx(1.0)
    assert "100.0% of 1,376 cells keep their type" in dialog.summary.text()
    dialog.close()

    # ---- Discard (answered in advance): the new run as it comes, the carried one kept
    widget.run(sync=True, keep=DISCARD)
    fresh = widget.annotation
    assert not fresh.manual_mask.any() and fresh.min_confidence == 0.0 and fresh.niche_cluster is None
    assert session.previous_transfer.annotation is new
    dialog = widget.compare_runs()
    table = dialog.table
    assert table.loc["my new type"].sum() == len(polygon)  # run A's new type, spread over run B's types
    assert "my new type" not in table.columns
    assert dialog.agreement < 1.0
    assert dialog.grid.rowCount() == len(table.index) and dialog.grid.columnCount() == len(table.columns)
    dialog.close()

    # ---- the previous run can be shown again (and swapped back)
    widget.show_previous_run()
    assert widget.annotation is new and session.previous_transfer.annotation is fresh
    assert viewer.layers["cell types"].visible and widget.legend.names() == list(new.categories)
    widget.show_previous_run()
    assert widget.annotation is fresh
