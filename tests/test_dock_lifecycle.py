"""Issue 17 items 3, 5, 7 and 8 in a real viewer (fake embedder; the model does not matter).

* 3: a run started from a transfer dock that is then closed finishes into the session,
  with a notification; a reopened dock shows what the session holds.
* 5: while a transfer runs the session lists it (``session.running``) and the load dock
  refuses to load another run or reference, with a message saying why.
* 7: a reopened session with niches shows them in the niche palette with a niche legend,
  and the transfer dock's "show" control and legend agree with the layer shown.
* 8: a failed reference load clears the previous reference's report and the session's
  reference, and shows the error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _dock_fixture import LOAD, NICHES, PLUGIN, TIMEOUT, TRANSFER, load_demo, use_fake_transfer

from napari_cellama.core.palette import niche_colors, to_hex
from napari_cellama.layers import layer_info
from napari_cellama.session import get_session


def _messages():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


@pytest.mark.gui
def test_closed_dock_finishes_into_session_and_load_waits(viewer, qtbot, demo_data, monkeypatch):
    use_fake_transfer(monkeypatch, delay=0.4)
    widgets = load_demo(viewer, qtbot, demo_data)
    load, widget = widgets[LOAD], widgets[TRANSFER]
    session = get_session(viewer)
    report = load.summary_label.text()
    assert "Shared genes" in report

    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: session.running == ("label transfer",), timeout=5_000)

    # ---- item 5: loading another reference or run while it runs is refused, and says why
    assert load.load() is None and load.use_demo() is None
    assert "label transfer is running" in load.last_error and "wait for it" in load.last_error
    assert load.summary_label.text() == report  # a refusal is no failed load: the report stays

    # ---- item 3: close the dock (napari's close button) while the run goes on
    viewer.window.remove_dock_widget(widget)
    assert widget.detached and widget.runner.busy
    qtbot.waitUntil(lambda: session.transfer is not None, timeout=TIMEOUT)
    qtbot.waitUntil(lambda: session.running == (), timeout=TIMEOUT)
    annotation = session.annotation
    assert "cell types" in viewer.layers and viewer.layers["cell types"].visible
    assert any("label transfer finished" in m and "1,376 cells annotated" in m for m in _messages())
    # the closed dock let go of the session: a later transfer is not drawn by it
    assert widget.annotation is None

    # the load dock works again once the run ended
    assert load.load() is not None
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)

    # ---- reopening the dock shows what the session holds
    annotation.set_threshold(0.25)
    _, reopened = viewer.window.add_plugin_dock_widget(PLUGIN, TRANSFER)
    assert reopened is not widget and reopened.annotation is annotation
    assert reopened.legend.names() == list(annotation.categories)
    assert reopened.export_box.isEnabled() and reopened.save_button.isEnabled()
    assert reopened.results_box.isEnabled() and reopened.review_box.isEnabled()
    assert reopened.threshold_slider.value() == 25 and "0.25" in reopened.threshold_label.text()
    assert reopened.run_button.isEnabled()


@pytest.mark.gui
def test_failed_reference_load_clears_the_report(viewer, qtbot, demo_data, tmp_path):
    load = load_demo(viewer, qtbot, demo_data, docks=(LOAD,))[LOAD]
    session = get_session(viewer)
    assert session.reference is not None and load.coverage_table.rowCount() > 0
    bad = tmp_path / "broken.h5ad"
    bad.write_text("not an h5ad file")
    load.set_reference_path(bad)
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    assert load.last_error
    text = load.summary_label.text()
    assert "Could not load" in text and "broken.h5ad" in text and "Shared genes" not in text
    assert load.coverage_table.rowCount() == 0
    assert session.reference is None and session.reference_path is None and not session.ready
    # loading now says what is missing, and the report keeps saying what went wrong
    assert load.load() is None and "label column" in load.last_error
    assert "Could not load" in load.summary_label.text()


@pytest.mark.gui
def test_reopened_session_shows_niches_in_their_palette(viewer, qtbot, demo_data, monkeypatch, tmp_path,
                                                       make_napari_viewer):
    from napari_cellama.io.export import write_spatialdata

    use_fake_transfer(monkeypatch)
    widget = load_demo(viewer, qtbot, demo_data)[TRANSFER]
    widget.run(sync=True)
    ann = widget.annotation
    ids = ann.cell_ids[:600]
    ann.set_niche_clusters(pd.Series(np.array(["1", "2", "3"])[np.arange(600) % 3], index=ids))
    session = get_session(viewer)
    path = write_spatialdata(tmp_path / "with_niches.zarr", ann, result=widget.result, query=session.query,
                             xenium=session.xenium_root, inputs=widget._inputs())

    # ---- a new window: the transfer and niche docks, then "Open saved session…"
    other = make_napari_viewer(show=True)
    docks = {name: other.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in (TRANSFER, NICHES)}
    transfer, niche = docks[TRANSFER], docks[NICHES]
    assert transfer.open_session(path) is not None
    layer = niche.niche_layer()
    assert layer is not None and layer.visible
    colors = layer_info(layer)["colors"]
    expected = {name: to_hex(c)[:7].lower() for name, c in niche_colors(["1", "2", "3"]).items()}
    assert {k: colors[k][:7].lower() for k in expected} == expected
    type_hex = {c[:7].lower() for c in transfer.annotation.hex_colors.values()}
    assert not type_hex & set(expected.values())  # a niche never reads as a cell type

    # the transfer dock says what is shown, with the niche legend
    assert transfer.map_combo.currentText() == "niche clusters" == transfer.shown_map()
    assert not transfer.legend.isVisibleTo(transfer) and transfer.niche_legend.isVisibleTo(transfer)
    assert transfer.niche_legend.names() == ["1", "2", "3"]
    assert not other.layers["cell types"].visible

    # choosing cell types shows the types and their legend, and hides the niches
    transfer.map_combo.setCurrentText("cell types")
    assert transfer.shown_map() == "cell types" and other.layers["cell types"].visible and not layer.visible
    assert transfer.legend.isVisibleTo(transfer) and not transfer.niche_legend.isVisibleTo(transfer)
    # and back: niches with their legend
    transfer.show_map("niche clusters")
    assert layer.visible and not other.layers["cell types"].visible
    # ticking a niche off in the transfer dock's legend hides it on the tissue
    transfer.niche_legend.set_checked("2", False)
    assert transfer.niche_legend.hidden() == {"2"}
    # clicking a niche selects its cells
    transfer._select_niche("1")
    assert len(get_session(other).selection) == 200

    # closing the niche dock (no job running) lets go of the session; its layer stays
    other.window.remove_dock_widget(niche)
    assert niche.detached and niche.annotation is None
    assert niche.niche_layer() is not None
    get_session(other).events.transfer.emit(get_session(other).transfer)
    assert niche.annotation is None
