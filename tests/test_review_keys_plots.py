"""Dock "4. Review" in a real viewer: the queue's keys follow the dock (unbound when it closes,
bound again when it reopens), and the marker dotplot in the Plots dock with the same clicks
(run under xvfb-run -a). Inputs as in test_review_widget: a 150-cell patch of the real crop,
30 cells per type of pbmc3k, the fast hash embedder."""

from __future__ import annotations

import pytest
from _hash_embedder import HashEmbedder
from test_review_widget import PLUGIN, TIMEOUT, _press, _setup

from napari_cellama._constants import CELLS_LAYER_NAME
from napari_cellama._qt.review_queue_view import QUEUE_KEYS


def _bound(viewer, key):
    from napari.utils.key_bindings import coerce_keybinding

    return viewer.keymap.get(coerce_keybinding(key))


@pytest.mark.gui
def test_queue_keys_unbound_when_the_dock_closes_and_rebound_when_it_reopens(viewer, qtbot, crop_dir, tmp_path):
    session, transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    viewer.layers.selection.active = viewer.layers[CELLS_LAYER_NAME]
    assert review.keys_bound and all(_bound(viewer, k) is not None for k in QUEUE_KEYS.values())
    _press(viewer, ".")
    first = review.queue.current
    assert first is not None
    viewer.window.remove_dock_widget(review)  # the dock's close button
    assert not review.keys_bound
    assert all(_bound(viewer, k) is None for k in QUEUE_KEYS.values())
    _press(viewer, ".")  # nothing moves: the key is napari's again
    assert review.queue.current == first
    # reopened from the Plugins menu: a new dock, keys bound to it
    _, again = viewer.window.add_plugin_dock_widget(PLUGIN, "4. Review")
    qtbot.waitUntil(lambda: again.data is not None and not again.busy, timeout=TIMEOUT)
    assert again is not review and again.keys_bound
    _press(viewer, ".")
    assert again.queue.current is not None and review.queue.current == first
    # a key bound by someone else meanwhile is left alone when the dock closes
    mine = lambda _v: None  # noqa: E731
    viewer.bind_key("Shift-U", mine, overwrite=True)
    viewer.window.remove_dock_widget(again)
    assert _bound(viewer, "Shift-U") is mine and _bound(viewer, ".") is None


@pytest.mark.gui
def test_marker_dotplot_in_the_plots_dock_selects_a_type_and_shows_a_gene(viewer, qtbot, crop_dir, tmp_path):
    from napari_cellama._qt.dotplot_view import DotplotView
    from napari_cellama._qt.plots_widget import DOTPLOT, VIEWS
    from napari_cellama._qt.review_jobs import cached_markers

    session, transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    ann = review.annotation
    _, plots = viewer.window.add_plugin_dock_widget(PLUGIN, "Plots")
    assert DOTPLOT in VIEWS
    plots.view_combo.setCurrentText(DOTPLOT)
    qtbot.waitUntil(lambda: plots.data is not None and not plots.runner.busy, timeout=TIMEOUT)
    view = plots.dotplot
    assert type(view) is DotplotView and type(review.dotplot) is DotplotView  # one widget class, two docks
    assert plots.stack.currentWidget() is view and view.isVisible()
    # the review dock's markers were reused (computed once per result)
    assert plots.data.markers is review.data.markers and cached_markers(review.result)[0] is review.data.markers
    t = view.table
    assert set(t["group"]) == set(ann.cell_type.astype(str)) and len(view.genes) >= 5
    group = ann.counts().index[0]
    view.click_tick("group", group)  # a mouse click on the type's tick
    assert sorted(session.selection.ids) == sorted(ann.cells_of(group))
    assert f"{len(ann.cells_of(group)):,} cells selected" in view.info.text()
    gene = view.genes[1]
    view.click_tick("gene", gene)
    layer = viewer.layers[f"expression: {gene}"]
    assert layer.colorbar.visible and viewer.layers.selection.active.name == CELLS_LAYER_NAME
    # an edit re-groups it; other views still draw on the figure
    ann.assign(ann.cell_ids[:5], "Reviewed type", reason="review")
    assert "Reviewed type" in set(view.table["group"])
    plots.view_combo.setCurrentText("composition")
    assert plots.stack.currentWidget() is plots.canvas


@pytest.mark.gui
def test_queue_edits_update_hover_features_and_empty_selection_hides_outlines(viewer, qtbot, crop_dir, tmp_path):
    session, transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    ann = review.annotation
    cells = viewer.layers[CELLS_LAYER_NAME]
    row = {c: i for i, c in enumerate(cells.features["cell_id"].astype(str))}
    first = review.next_cell()
    new_type = next(t for t in ann.categories if t != ann.cell_type.loc[first])
    review.evidence.type_combo.setCurrentText(new_type)
    review.queue_action("reassign")  # an edit: hover features follow in place
    feats = cells.features
    assert feats["cell_type"].iloc[row[first]] == new_type and feats["source"].iloc[row[first]] == "manual"
    review.accept()
    second = review.queue.current
    review.queue_action("undo")
    review.queue_action("undo")
    feats = cells.features
    assert feats["cell_type"].iloc[row[first]] == ann.cell_type.loc[first] != new_type
    assert (feats["cell_type"].astype(str).to_numpy() == ann.cell_type.astype(str).reindex(
        feats["cell_id"].astype(str)).to_numpy()).all()
    assert second is not None
    # the outline layer is hidden while nothing is selected
    session.selection.select([first])
    outlines = viewer.layers["selected cells"]
    assert outlines.visible
    session.selection.select([])
    assert not outlines.visible
    session.selection.select(list(ann.cell_ids[:3]))
    assert outlines.visible


def test_queue_in_small_spatial_groups():
    import numpy as np
    import pandas as pd

    from napari_cellama.core import Annotation
    from napari_cellama.core.review_queue import ReviewQueue

    rng = np.random.default_rng(1)
    n = 400
    t = pd.DataFrame({"transferred_type": rng.choice(list("AB"), n), "confidence": rng.random(n),
                      "distance": rng.random(n)}, index=[f"c{i:03d}" for i in range(n)])
    ann = Annotation(t)
    xy = rng.random((n, 2)) * 300
    queue = ReviewQueue(ann)
    plain = list(queue.cell_ids)
    n_groups = queue.set_grouping(xy, 30.0, max_cells=6)
    assert 1 < n_groups < n and queue.n_groups == n_groups
    ids = list(queue.cell_ids)
    assert sorted(ids) == sorted(plain)  # the same cells, regrouped
    pos = {c: i for i, c in enumerate(ann.cell_ids)}
    conf = t["confidence"]
    seeds = []
    for g in range(n_groups):
        members = [ids[i] for i in range(len(ids)) if queue.group_at(i) == g]
        assert 1 <= len(members) <= 6
        seed = members[0]
        seeds.append(seed)
        d = np.hypot(*(xy[[pos[c] for c in members]] - xy[pos[seed]]).T)
        assert (d <= 30.0 + 1e-9).all()  # spatially contiguous: around the group's seed
        assert list(conf[members]) == sorted(conf[members])  # most uncertain first inside a group
    # groups come in the order of their seed's uncertainty
    assert list(conf[seeds]) == sorted(conf[seeds])
    assert ids[0] == plain[0]
    queue.set_filters(below=0.5)  # filters keep the grouping
    assert queue.n_groups > 0 and (conf[list(queue.cell_ids)] < 0.5).all()
    assert queue.set_grouping(None) == 0 and list(queue.cell_ids) == [c for c in plain if conf[c] < 0.5]


@pytest.mark.gui
def test_queue_walks_groups_moving_the_camera_once_per_group(viewer, qtbot, crop_dir, tmp_path):
    import numpy as np
    from test_review_widget import _yx

    from napari_cellama._qt.review_queue_view import GROUP_MICRONS

    session, transfer, review = _setup(viewer, qtbot, crop_dir, tmp_path, HashEmbedder())
    review.queue_panel.group_check.setChecked(True)  # grouped in the dock's worker
    queue = review.queue
    qtbot.waitUntil(lambda: queue.n_groups > 0 and not review.busy, timeout=TIMEOUT)
    seen = {}
    for _ in range(12):
        cell = review.next_cell()
        g = queue.group_at()
        seen.setdefault(g, cell)
        seed = seen[g]
        np.testing.assert_allclose(viewer.scene.camera.center[-2:], _yx(session, seed), atol=1e-3)
        np.testing.assert_allclose(review.cursor_position, _yx(session, cell), atol=1e-3)
        assert np.hypot(*np.subtract(_yx(session, cell), _yx(session, seed))) <= GROUP_MICRONS + 1e-6
        assert f"group {g + 1:,} of" in review.queue_panel.current_label.text()
    assert len(seen) < 12  # some groups held more than one cell
