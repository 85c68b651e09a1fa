"""Review part of the transfer dock: pick cells, assign a type, undo / redo.

Cells are picked by clicking (Shift adds), by polygons drawn in a Shapes layer, or from a
legend row; the pick is the session's :class:`~napari_cellama.session.CellSelection`, so a
niche or a plot point selected in another dock is the same selection, outlined by the
dock's :class:`~napari_cellama._qt.selection_view.SelectionView`. Edits go to the session's
:class:`~napari_cellama.core.Annotation` (which keeps 100 edits for undo).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from .._constants import CELL_ID

POLYGON_LAYER = "selection polygons"


class ReviewMixin:
    """The "Review" box and its actions, mixed into the transfer dock (needs ``viewer``,
    ``session``, ``annotation``, ``runner`` and ``_cells_layer``)."""

    def _build_review_box(self) -> QGroupBox:
        box = QGroupBox("Review")
        rv = QVBoxLayout(box)
        self.selection_label = QLabel("0 cells selected")
        self.pick_button = QPushButton("Pick cells by clicking")
        self.pick_button.setCheckable(True)
        self.pick_button.setToolTip("click a cell to select it, Shift+click to add it")
        self.polygon_button = QPushButton("Draw polygons")
        self.polygon_button.clicked.connect(self.start_polygons)
        self.in_polygons_button = QPushButton("Select in polygons")
        self.in_polygons_button.clicked.connect(lambda: self.select_in_polygons())
        clear_button = QPushButton("Clear")
        clear_button.clicked.connect(lambda: self.select_cells([]))
        sel_row = QHBoxLayout()
        for w in (self.pick_button, self.polygon_button, self.in_polygons_button, clear_button):
            sel_row.addWidget(w)
        self.assign_combo = QComboBox()
        self.assign_combo.setEditable(True)
        self.assign_combo.setToolTip("choose a type or type a new name")
        self.assign_button = QPushButton("Assign to selected")
        self.assign_button.clicked.connect(lambda: self.assign_selected())
        assign_row = QHBoxLayout()
        assign_row.addWidget(self.assign_combo, 1)
        assign_row.addWidget(self.assign_button)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.clicked.connect(self.redo)
        undo_row = QHBoxLayout()
        undo_row.addWidget(self.undo_button)
        undo_row.addWidget(self.redo_button)
        rv.addWidget(self.selection_label)
        rv.addLayout(sel_row)
        rv.addLayout(assign_row)
        rv.addLayout(undo_row)
        self.session.selection.changed.connect(self._on_selection)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        return box

    # ------------------------------------------------------------------ selection
    @property
    def selected(self) -> pd.Index:
        """Cell ids of the session's selection (the cells a review edit applies to)."""
        return self.session.selection.ids

    def select_cells(self, cell_ids, add: bool = False) -> None:
        """Select cells by id (``add`` keeps the current selection); the outlines follow."""
        ids = pd.Index(np.asarray(list(cell_ids), dtype=object).astype(str), name=CELL_ID)
        if self.annotation is not None:
            ids = ids[ids.isin(self.annotation.cell_ids)]
        self.session.selection.select(ids, add=add)

    def _on_selection(self, ids) -> None:
        self.selection_label.setText(f"{len(ids):,} cells selected")

    def select_type(self, cell_type: str) -> None:
        """Select every cell currently of ``cell_type``."""
        if self.annotation is not None:
            self.select_cells(self.annotation.cells_of(cell_type))
            self.assign_combo.setCurrentText(cell_type)

    def cell_at(self, position) -> str | None:
        """cell_id under a world position, or None."""
        cells = self._cells_layer
        if cells is None or self.annotation is None:
            return None
        value = cells.get_value(position, world=True)
        if isinstance(value, tuple):  # multiscale: (level, value)
            value = value[-1]
        if value is None or int(value) == 0:
            return None
        ids = self.annotation.cell_ids_of_labels([int(value)])
        return str(ids[0]) if len(ids) else None

    def _on_mouse(self, viewer, event):
        if not self.pick_button.isChecked() or self.annotation is None:
            return
        start = tuple(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if moved and np.hypot(*np.subtract(event.position[-2:], start[-2:])) > 2 * min(viewer.layers[0].scale[-2:]):
            return
        cell = self.cell_at(start)
        if cell is not None:
            self.select_cells([cell], add="Shift" in event.modifiers)

    def start_polygons(self) -> None:
        """Add (or activate) the polygons layer in polygon-drawing mode."""
        if POLYGON_LAYER in self.viewer.layers:
            layer = self.viewer.layers[POLYGON_LAYER]
        else:
            layer = self.viewer.add_shapes(name=POLYGON_LAYER, edge_color="yellow", face_color=[1, 1, 0, 0.1],
                                           edge_width=2)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_polygon"

    def select_in_polygons(self, layer=None, add: bool = False) -> int:
        """Select the cells whose centroid lies inside any polygon of ``layer``; returns the count."""
        from matplotlib.path import Path as MplPath

        if layer is None:
            if POLYGON_LAYER not in self.viewer.layers:
                self.runner.fail("draw polygons first (Draw polygons)")
                return 0
            layer = self.viewer.layers[POLYGON_LAYER]
        q = self.session.query
        if q is None or "spatial" not in q.obsm:
            self.runner.fail("the run's centroids are not loaded")
            return 0
        xy = np.asarray(q.obsm["spatial"], dtype=np.float64)  # (x, y) microns
        inside = np.zeros(len(xy), dtype=bool)
        for shape in layer.data:
            world = np.asarray([layer.data_to_world(v) for v in shape])[:, -2:]  # (y, x)
            inside |= MplPath(world[:, ::-1]).contains_points(xy)
        self.select_cells(q.obs_names[inside], add=add)
        # drawing is over: stop adding polygons on click and make the cells layer active again,
        # so that hovering shows the cells' results (napari shows the active layer's status)
        layer.mode = "pan_zoom"
        if self._cells_layer is not None and self._cells_layer in self.viewer.layers:
            self.viewer.layers.selection.active = self._cells_layer
        return int(inside.sum())

    # ------------------------------------------------------------------ edits
    def _refresh_assign_types(self) -> None:
        current = self.assign_combo.currentText()
        self.assign_combo.clear()
        if self.annotation is not None:
            self.assign_combo.addItems(list(self.annotation.categories))
        if current:
            self.assign_combo.setCurrentText(current)

    def assign_selected(self, cell_type: str | None = None):
        """Give the selected cells a type (an existing one or a new name)."""
        name = (cell_type if cell_type is not None else self.assign_combo.currentText()).strip()
        if self.annotation is None or not len(self.selected):
            self.runner.fail("select cells first (click, polygons or a legend entry)")
            return None
        if not name:
            self.runner.fail("choose or type a cell type name")
            return None
        return self.annotation.assign(self.selected, name)

    def undo(self):
        return self.annotation.undo() if self.annotation is not None else None

    def redo(self):
        return self.annotation.redo() if self.annotation is not None else None

    def _update_undo_buttons(self) -> None:
        a = self.annotation
        self.undo_button.setEnabled(bool(a is not None and a.can_undo))
        self.redo_button.setEnabled(bool(a is not None and a.can_redo))
        if a is not None:
            self.undo_button.setToolTip(f"{a.n_undo} edits to undo")
            self.redo_button.setToolTip(f"{a.n_redo} edits to redo")
