"""Provisional labels in the transfer dock (issue 15): a first ``cell types (provisional)`` layer
while the run goes on, replaced by the final ``cell types`` when the run ends.

:class:`ProvisionalView` runs the dock's job inside a
:class:`~napari_cellama.core.provisional.ProvisionalChannel` (:meth:`ProvisionalView.wrap`);
when the job yields ``STAGE_PROVISIONAL`` (surrogate mode: the method's labels from the surrogate's
embeddings, before the exact re-embedding of the cells whose label is not robust) it paints
the published table over the tissue, under its own layer name, with a notification and
a status line that say "provisional". A later provisional table repaints the same layer in
place (one lookup-table write). When the final result becomes the session's transfer the
provisional layer is removed in the same step (the final layers take its place); a cancelled
or failed run removes it too, so nothing provisional is ever saved or reviewed.
"""

from __future__ import annotations

from .._constants import CELL_TYPE, PROVISIONAL_LAYER, STAGE_PROVISIONAL


class ProvisionalView:
    """The provisional layer of one transfer dock (needs ``viewer``, ``session``, ``runner``,
    ``status`` and ``_cells()`` on the dock)."""

    def __init__(self, dock):
        self.dock = dock
        self.channel = None
        self.shown = 0
        """Provisional tables shown during the current run."""
        self._cells_style = None
        """``(cells layer, contour, opacity)`` before the provisional layer made it outlines."""
        dock.runner.progressed.connect(self._on_progress)
        dock.runner.finished.connect(self._on_finished)
        dock.session.events.transfer.connect(self._on_transfer)

    # ------------------------------------------------------------------ the job
    def wrap(self, job):
        """``job`` (a generator function) run inside a fresh channel, on the worker's thread."""
        from ..core.provisional import ProvisionalChannel

        self.channel = channel = ProvisionalChannel()
        self.shown = 0

        def listened(*args, **kwargs):
            from ..core.provisional import listening

            with listening(channel):
                return (yield from job(*args, **kwargs))

        return listened

    # ------------------------------------------------------------------ the layer
    def layer(self):
        """The provisional layer, or None."""
        viewer = self.dock.viewer
        return viewer.layers[PROVISIONAL_LAYER] if PROVISIONAL_LAYER in viewer.layers else None

    def show(self, table, info: dict | None = None) -> None:
        """Paint ``table`` (a per-cell transfer table) as the provisional layer (in place if shown)."""
        from napari.layers import Layer

        from .. import layers as L

        cells = self.dock._cells()
        palette = self.dock.session.type_colors
        names = sorted({str(c) for c in table[CELL_TYPE]})
        colors = {n: palette.color(n) for n in names}
        data, kwargs, kind = L.cell_categories_layer_data(cells, table.index, table[CELL_TYPE],
                                                          name=PROVISIONAL_LAYER, colors=colors)
        old = self.layer()
        if old is not None and L.layer_info(old).get("categories") == names:
            L.lookup_table(old)[:] = (data[0] if isinstance(data, list) else data).lut
            L.redraw(old)
        else:
            if old is not None:
                self.dock.viewer.layers.remove(old)
            kwargs["metadata"]["cellama"]["provisional"] = True
            layer = self.dock.viewer.add_layer(Layer.create(data, kwargs, kind))
            viewer = self.dock.viewer
            viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(cells))  # under the outlines
            # the cells as outlines over it (as over the final layers): filled, they would hide it
            if self._cells_style is None:
                self._cells_style = (cells, cells.contour, cells.opacity)
            cells.contour, cells.opacity = 1, 0.6
        self.shown += 1
        mode = (info or {}).get("embedding_mode") or "early"
        note = (f"provisional labels ({mode} embedding) for {len(table):,} cells; refining the cells whose "
                "label is not robust — the final labels replace them when the run ends")
        self.dock.status.setText(note)
        if self.shown == 1:
            from napari.utils.notifications import show_info

            show_info(f"napari-cellama: {note}")

    def clear(self) -> None:
        """Remove the provisional layer (if any)."""
        layer = self.layer()
        if layer is not None:
            self.dock.viewer.layers.remove(layer)

    # ------------------------------------------------------------------ slots
    def _on_progress(self, value) -> None:
        try:
            stage = value[0]
        except (TypeError, IndexError):
            return
        if stage != STAGE_PROVISIONAL or self.channel is None:
            return
        table = self.channel.take()
        if table is None:
            return
        from ..validators import CellamaInputError

        try:
            self.show(table, self.channel.info)
        except CellamaInputError:  # no cells layer to paint on (closed meanwhile): the final result says so
            return

    def _on_transfer(self, _state) -> None:
        self.clear()  # the final result (or a cleared session) replaces the provisional labels

    def _on_finished(self) -> None:
        runner = self.dock.runner
        if runner.was_cancelled or runner.last_error is not None:
            if self.layer() is not None and self._cells_style is not None:  # no final layers: cells as before
                cells, contour, opacity = self._cells_style
                cells.contour, cells.opacity = contour, opacity
            self.clear()
        self._cells_style = None
        self.channel = None
