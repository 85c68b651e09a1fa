"""Walking the review queue of dock "4. Review": camera, cursor, prefetch, grouping.

:class:`QueueWalkMixin` gives :class:`~.review_widget.ReviewWidget` its queue: the filters,
next / previous (the camera centres on the cell, a one-point ring marks it), the counts, the
grouping in small spatial groups (computed in the dock's worker, with progress and Cancel),
and the prefetch of the next cell's view: once a cell is shown, the raster tiles around the
queue's next cell are decoded on a worker thread into the shared tile cache
(:mod:`napari_cellama.layers.tiles`), so that napari's re-slicing at the next camera position
finds them ready.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .review_queue_view import GROUP_MICRONS, QUEUE_KEYS
from .selection_view import cells_layer

CURSOR_LAYER = "review cursor"
_VIEW_MICRONS = 200.0
"""Width (µm) the camera shows around a queued cell when the view is much wider."""
_CURSOR_MICRONS = 18.0


class QueueWalkMixin:
    """The queue part of the review dock (needs ``viewer``, ``session``, ``annotation``,
    ``queue``, ``queue_panel``, ``runner`` and ``show_cell``)."""

    _shown_group = None
    _grouping = None

    def apply_filters(self) -> None:
        """(Re)build the queue with the panel's filters; grouping (when ticked) runs in the
        dock's worker (:meth:`group_queue`), the queue walks cell by cell until it lands."""
        from ..core.review_queue import ReviewQueue

        if self.annotation is None:
            return
        if self.queue is None or self.queue.annotation is not self.annotation:
            self.queue = ReviewQueue(self.annotation)
        region = self.session.selection.ids if self.queue_panel.region_check.isChecked() else None
        self.queue.set_grouping(None)
        self.queue.set_filters(self.queue_panel.label, region, self.queue_panel.below)
        self._shown_group = None
        self._update_counts()
        if self.queue_panel.group_check.isChecked():
            self.group_queue()

    def group_queue(self, sync: bool = False):
        """Group the queue in small spatial groups off the GUI thread (progress, Cancel: the
        box is then unticked and the queue stays cell by cell); returns the worker."""
        xy = self._cell_xy()
        if self.queue is None or xy is None:
            return None
        queue = self.queue
        done = lambda grouping: self._on_grouped(queue, grouping)  # noqa: E731
        if sync:
            return self.runner.run_sync(queue.iter_grouping, xy, GROUP_MICRONS, on_done=done)
        self._grouping = self.runner.start(queue.iter_grouping, xy, GROUP_MICRONS, on_done=done,
                                           what="grouping the review queue", chained=self.runner.busy)
        return self._grouping

    def _on_grouped(self, queue, grouping) -> None:
        if self.runner.was_cancelled or queue is not self.queue:
            return  # Cancel pressed after the worker finished, or an older queue's groups
        self._grouping = None
        if not self.queue_panel.group_check.isChecked():
            return  # unticked meanwhile
        if queue.apply_grouping(grouping) < 0:  # the filters changed meanwhile: group again
            self.group_queue()
            return
        self._shown_group = None
        self._update_counts()
        self.queue_panel.current_label.setText(f"{queue.n_groups:,} groups: press {QUEUE_KEYS['next']} "
                                               "for the first")

    def _on_runner_cancelled(self) -> None:
        if getattr(self, "_grouping", None) is not None:  # grouping stopped: the box says so
            self._grouping = None
            with _blocked(self.queue_panel.group_check):
                self.queue_panel.group_check.setChecked(False)
            self.queue_panel.current_label.setText("grouping cancelled: the queue walks cell by cell")

    def _cell_xy(self):
        """``(x, y)`` of every cell of the annotation (NaN where unknown), or None."""
        q = self.session.query
        if q is None or "spatial" not in q.obsm or self.annotation is None:
            return None
        rows = q.obs_names.get_indexer(self.annotation.cell_ids)
        xy = np.asarray(q.obsm["spatial"], dtype=np.float64)[:, :2][np.maximum(rows, 0)]
        xy[rows < 0] = np.nan
        return xy

    def _update_counts(self) -> None:
        if self.queue is None:
            return
        done, left = self.queue.counts()
        self.queue_panel.count_label.setText(
            f"review queue: {len(self.queue):,} cells, most uncertain first — {done:,} reviewed, {left:,} remaining")

    def next_cell(self) -> str | None:
        """Go to the next cell of the queue not yet reviewed (camera, selection, evidence)."""
        return self._walk(self.queue.next() if self.queue is not None else None, "end of the queue")

    def previous_cell(self) -> str | None:
        return self._walk(self.queue.previous() if self.queue is not None else None, "start of the queue")

    def _walk(self, cell: str | None, end: str) -> str | None:
        if cell is None:
            self.queue_panel.current_label.setText(end)
            return None
        group = self.queue.group_at()
        self.centre_on(cell, pan=group is None or group != self._shown_group)  # a group: the camera moves once
        self._shown_group = group
        self.show_cell(cell, select=False)
        u = self.queue.uncertainty_of(cell)
        where = "" if group is None else f"group {group + 1:,} of {self.queue.n_groups:,}, "
        self.queue_panel.current_label.setText(
            f"{where}cell {self.queue.position + 1:,} of {len(self.queue):,}: {cell} (uncertainty {u:.2f})")
        self.prefetch_next()
        return cell

    def prefetch_next(self):
        """Read the raster tiles of the queue's next cell's view on a worker thread (the shared
        tile cache, :mod:`napari_cellama.layers.tiles`), so that Next finds them decoded; returns
        the future, or None when there is nothing to read."""
        from ..layers.tiles import prefetch, view_jobs

        nxt = self.queue.peek() if self.queue is not None else None
        yx = self._cell_yx(nxt) if nxt is not None else None
        cam = _camera(self.viewer)
        try:
            h, w = (float(v) for v in self.viewer.canvas.size)
        except (AttributeError, TypeError, ValueError):
            return None
        if yx is None or not w or cam.zoom <= 0:
            return None
        jobs = view_jobs(self.viewer.layers, yx, (h / cam.zoom / 2, w / cam.zoom / 2))
        return prefetch(jobs) if jobs else None

    def _cell_yx(self, cell_id: str):
        q = self.session.query
        if q is None or "spatial" not in q.obsm:
            return None
        i = q.obs_names.get_indexer([str(cell_id)])[0]
        if i < 0:
            return None
        x, y = (float(v) for v in np.asarray(q.obsm["spatial"][i])[:2])
        return y, x

    def centre_on(self, cell_id: str, pan: bool = True) -> None:
        """Centre the camera on the cell (zooming in when the view is far wider than a niche);
        ``pan=False``: only move the ring (a cell of the group already in view)."""
        yx = self._cell_yx(cell_id)
        if yx is None:
            return
        y, x = yx
        self._move_cursor(y, x)
        if not pan:
            return
        cam = _camera(self.viewer)
        width = self._canvas_width()
        if width and width / max(cam.zoom, 1e-9) > 4 * _VIEW_MICRONS:
            cam.update({"center": (y, x), "zoom": width / _VIEW_MICRONS})
        else:
            cam.center = (y, x)

    def _move_cursor(self, y: float, x: float) -> None:
        """A ring around the cell under review (a one-point layer: moving it costs nothing,
        unlike re-outlining a selection over the whole section's mask)."""
        viewer = self.viewer
        if CURSOR_LAYER in viewer.layers:
            viewer.layers[CURSOR_LAYER].data = np.array([[y, x]])
            return
        cells = cells_layer(viewer, self.session)
        viewer.add_points(np.array([[y, x]]), name=CURSOR_LAYER, size=_CURSOR_MICRONS, symbol="ring",
                          face_color="yellow", border_width=0, opacity=0.9)
        if cells is not None:  # the cells layer stays on top and active (hovering shows results)
            viewer.layers.move(viewer.layers.index(cells), len(viewer.layers))
            viewer.layers.selection.active = cells

    @property
    def cursor_position(self):
        """``(y, x)`` of the review cursor, or None."""
        if CURSOR_LAYER not in self.viewer.layers:
            return None
        return tuple(float(v) for v in self.viewer.layers[CURSOR_LAYER].data[0])

    def _canvas_width(self) -> float:
        try:
            return float(self.viewer.canvas.size[1])  # (height, width) in screen pixels
        except (AttributeError, IndexError, TypeError):
            return 0.0


@contextmanager
def _blocked(widget):
    widget.blockSignals(True)
    try:
        yield
    finally:
        widget.blockSignals(False)


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
