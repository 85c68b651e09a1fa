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
