"""Dock widget "2. Transfer labels, review and export".

Reads the run and reference loaded by "1. Load" (:func:`napari_cellama.session.get_session`),
runs :func:`napari_cellama.core.iter_transfer` off the GUI thread (progress per stage,
Cancel), and shows the result as layers made by :mod:`napari_cellama.layers`:

* ``cell types``: every cell painted with its type (legend in the dock: tick to show or
  hide a type, "show only"), relabelled live by the ``Unassigned`` threshold;
* ``confidence`` and ``distance to reference``: colour-mapped maps with colour bars;
* ``selected cells``: outlines of the cells picked for review.

Review: pick cells by clicking (Shift adds) or by polygons drawn in a Shapes layer, assign a
type from the list or a new name, undo / redo (the :class:`~napari_cellama.core.Annotation`
keeps 100 edits). Hovering a cell (the cells layer is kept on top and active) shows
cell_id, type, confidence, runner-up, source and sentence from the layer's features.

Export: SpatialData zarr session (reopened with "Open session"), ``.h5ad``, Xenium Explorer
cell-groups CSV, per-cell CSV; all writes go through :mod:`napari_cellama.io.export`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_EMBED_MODE,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_TOP_K,
    DISTANCE,
    EMBED_MODES,
    RUNNER_UP,
    SENTENCE,
    SOURCE,
)
from ..validators import CellamaInputError
from ._fold import fold_button, set_unfolded
from ._runner import JobRunner

TYPES_LAYER = "cell types"
CONFIDENCE_LAYER = "confidence"
DISTANCE_LAYER = "distance to reference"
SELECTION_LAYER = "selected cells"
POLYGON_LAYER = "selection polygons"
MAPS = (TYPES_LAYER, CONFIDENCE_LAYER, DISTANCE_LAYER)
HOVER_COLUMNS = (CELL_TYPE, CONFIDENCE, RUNNER_UP, SOURCE, SENTENCE)


def transfer_job(query, reference, label_key, top_k, model, k, metadata, device, mode, cache):
    """The engine generator run by the widget (a plain function, testable without Qt)."""
    from ..core import iter_transfer
    from ..core.embedding_options import make_embedder

    embedder = make_embedder(model=model or None, device=device, mode=mode, cache=cache or None)
    result = yield from iter_transfer(query, reference, label_key, top_k=top_k, k=k,
                                      metadata=metadata, embedder=embedder)
    return result


class TransferWidget(QWidget):
    """Label transfer, review and export (see the module docstring)."""

    transferred = Signal(object)
    """Emitted with the :class:`~napari_cellama.core.Annotation` when results are shown."""

    def __init__(self, napari_viewer):
        super().__init__()
        from ..session import get_session
        from .legend import LegendWidget

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.result = None
        self.annotation = None
        self.selected = pd.Index([], dtype=object, name=CELL_ID)
        self._cells_layer = None
        self._layers: dict = {}

        self.status = QLabel()
        self.status.setWordWrap(True)

        # ---------------------------------------------------------------- parameters
        # the parameters fold away once results are shown (legend and review need the height);
        # the arrow button brings them back
        params = self.params_box = QGroupBox()
        self.params_toggle = fold_button("Parameters", params, expanded=True)
        form = QFormLayout(params)
        self.label_combo = QComboBox()
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 200)
        self.top_k_spin.setValue(DEFAULT_TOP_K)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default: offline all-MiniLM-L6-v2")
        model_browse = QPushButton("…")
        model_browse.setToolTip("choose a local sentence-transformers model folder (e.g. a fine-tuned one)")
        model_browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(model_browse)
        self.metadata_list = QListWidget()
        self.metadata_list.setSelectionMode(QAbstractItemView.MultiSelection)
        self.metadata_list.setMaximumHeight(70)
        self.metadata_list.setToolTip("columns present in both query and reference, appended to every sentence")
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 200)
        self.k_spin.setValue(DEFAULT_N_NEIGHBORS)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(EMBED_MODES))
        self.mode_combo.setCurrentText(DEFAULT_EMBED_MODE)
        self.cache_check = QCheckBox("cache embeddings on disk (re-runs are fast)")
        self.cache_check.setChecked(True)
        form.addRow("label column", self.label_combo)
        form.addRow("top-k genes", self.top_k_spin)
        form.addRow("model", model_row)
        form.addRow("metadata", self.metadata_list)
        form.addRow("k neighbours", self.k_spin)
        form.addRow("device", self.device_combo)
        form.addRow("embedding", self.mode_combo)
        form.addRow("", self.cache_check)
        self.run_button = QPushButton("Run transfer")
        self.run_button.clicked.connect(lambda: self.run())
        self.runner = JobRunner(self)
        self.runner.started.connect(lambda _what: self.run_button.setEnabled(False))
        self.runner.finished.connect(lambda: self.run_button.setEnabled(self.session.ready))

        # ---------------------------------------------------------------- results
        self.results_box = QGroupBox("Results")
        rform = QVBoxLayout(self.results_box)
        self.map_combo = QComboBox()
        self.map_combo.addItems(list(MAPS))
        self.map_combo.currentTextChanged.connect(self.show_map)
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, 100)
        self.threshold_slider.valueChanged.connect(self._on_threshold_slider)
        self.threshold_label = QLabel("Unassigned below confidence 0.00")
        self.distance_spin = QDoubleSpinBox()
        self.distance_spin.setRange(0.0, 2.0)
        self.distance_spin.setSingleStep(0.01)
        self.distance_spin.setDecimals(3)
        self.distance_spin.setSpecialValueText("off")
        self.distance_spin.setToolTip("cells farther than this (cosine distance) from any reference cell: Unassigned")
        self.distance_spin.valueChanged.connect(lambda _v: self._apply_threshold())
        map_row = QHBoxLayout()
        map_row.addWidget(QLabel("show"))
        map_row.addWidget(self.map_combo, 1)
        dist_row = QHBoxLayout()
        dist_row.addWidget(QLabel("max distance"))
        dist_row.addWidget(self.distance_spin)
        self.legend = LegendWidget()
        self.legend.type_activated.connect(self.select_type)
        rform.addLayout(map_row)
        rform.addWidget(self.threshold_label)
        rform.addWidget(self.threshold_slider)
        rform.addLayout(dist_row)
        rform.addWidget(self.legend, 1)

        # ---------------------------------------------------------------- review
        self.review_box = QGroupBox("Review")
        rv = QVBoxLayout(self.review_box)
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

        # ---------------------------------------------------------------- export
        self.export_box = QGroupBox("Save and export")
        ex = QHBoxLayout(self.export_box)
        self.save_button = QPushButton("Save session…")
        self.save_button.setToolTip("SpatialData zarr with every per-cell result, embeddings and edits")
        self.save_button.clicked.connect(lambda: self.save_session())
        self.h5ad_button = QPushButton("h5ad…")
        self.h5ad_button.clicked.connect(lambda: self.export_h5ad())
        self.explorer_button = QPushButton("Xenium Explorer CSV…")
        self.explorer_button.clicked.connect(lambda: self.export_explorer_csv())
        self.csv_button = QPushButton("CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        for w in (self.save_button, self.h5ad_button, self.explorer_button, self.csv_button):
            ex.addWidget(w)
        self.open_button = QPushButton("Open saved session…")
        self.open_button.clicked.connect(lambda: self.open_session())

        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.params_toggle)
        layout.addWidget(params)
        layout.addWidget(self.run_button)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.results_box, 1)  # the legend takes the spare height
        layout.addWidget(self.review_box)
        layout.addWidget(self.export_box)
        layout.addWidget(self.open_button)
        # vertically expanding, so that napari adds no stretch below and the legend gets the height
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)

        self.session.changed.connect(self._on_session_changed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._on_session_changed("init")
        self._set_has_result(False)

    # ------------------------------------------------------------------ session / parameters
    def _on_session_changed(self, what: str) -> None:
        if what not in ("init", "loaded", "cleared"):
            return
        s = self.session
        if not s.ready:
            self.status.setText("Load a Xenium run and a reference in “1. Load Xenium and reference” first.")
            self.run_button.setEnabled(False)
            return
        from ..core.summaries import categorical_columns

        self.label_combo.clear()
        cols = categorical_columns(s.reference.obs)
        if s.label_key and s.label_key not in cols:
            cols.insert(0, s.label_key)
        self.label_combo.addItems(cols)
        self.label_combo.setCurrentText(s.label_key)
        if s.top_k:
            self.top_k_spin.setValue(int(s.top_k))
        self.metadata_list.clear()
        shared = [c for c in s.query.obs.columns if c in s.reference.obs.columns]
        self.metadata_list.addItems([str(c) for c in shared])
        self.status.setText(f"{s.query.n_obs:,} cells, reference of {s.reference.n_obs:,} cells: ready to run.")
        self.run_button.setEnabled(True)

    def _browse_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "sentence-transformers model folder")
        if path:
            self.model_edit.setText(path)

    def show_parameters(self, visible: bool = True) -> None:
        """Unfold (or fold away) the parameters box."""
        set_unfolded(self.params_toggle, self.params_box, visible)

    def parameters(self) -> dict:
        return {
            "label_key": self.label_combo.currentText(),
            "top_k": int(self.top_k_spin.value()),
            "model": self.model_edit.text().strip() or None,
            "k": int(self.k_spin.value()),
            "metadata": [i.text() for i in self.metadata_list.selectedItems()],
            "device": self.device_combo.currentText(),
            "mode": self.mode_combo.currentText(),
            "cache": self.cache_check.isChecked(),
        }

    # ------------------------------------------------------------------ run
    def run(self, sync: bool = False):
        """Start the transfer (in a worker; ``sync=True`` runs it here, for tests and scripts)."""
        s = self.session
        if not s.ready:
            self.runner._fail("load a Xenium run and a reference first (widget 1)")
            return None
        p = self.parameters()
        args = (s.query, s.reference, p["label_key"], p["top_k"], p["model"], p["k"], p["metadata"],
                p["device"], p["mode"], p["cache"])
        if sync:
            return self.runner.run_sync(transfer_job, *args, on_done=self._on_result)
        return self.runner.start(transfer_job, *args, on_done=self._on_result, what="label transfer")

    def _on_result(self, result) -> None:
        from ..core import Annotation

        s = self.session
        types = [str(t) for t in pd.unique(result.reference_labels)]
        annotation = Annotation(result.table, label_ids=s.label_of_cell.reindex(result.table.index).to_numpy(),
                                types=sorted(types))
        self.result = result
        self.show_annotation(annotation)
        note = (f"{len(result.table):,} cells annotated ({_model_label(result.params.get('model'))}, "
                f"{result.params.get('embedding_mode', 'exact')} embedding)")
        self.status.setText(note)

    # ------------------------------------------------------------------ layers
    def _cells(self):
        from .._constants import KIND_CELLS
        from ..layers import find_layers

        name = self.session.layer_names.get("cells")
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        found = find_layers(self.viewer.layers, KIND_CELLS)
        if not found:
            raise CellamaInputError("no cells layer: open the Xenium run first")
        return found[0]

    def show_annotation(self, annotation) -> None:
        """Replace the shown annotation (new run or restored session) and build its layers."""
        from .. import layers as L

        cells = self._cells()
        if annotation.label_ids is None:
            feats = cells.features
            label_of = pd.Series(feats["index"].to_numpy(np.int64), index=feats[CELL_ID].astype(str))
            annotation.set_label_ids(label_of.reindex(annotation.cell_ids).fillna(0).to_numpy(np.int64))
        if self.annotation is not None:
            self.annotation.disconnect(self._on_annotation_changed)
        for name in (*MAPS, SELECTION_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._cells_layer = cells
        self.annotation = annotation
        t = annotation.table
        ids = t.index
        layer_types = self.viewer.add_layer(_create(L.annotation_layer_data(cells, annotation, name=TYPES_LAYER)))
        conf = self.viewer.add_layer(_create(L.cell_values_layer_data(
            cells, ids, t[CONFIDENCE].to_numpy(), name=CONFIDENCE_LAYER, colormap="viridis",
            contrast_limits=(0.0, 1.0))))
        dist = self.viewer.add_layer(_create(L.cell_values_layer_data(
            cells, ids, t[DISTANCE].to_numpy(), name=DISTANCE_LAYER, colormap="magma")))
        sel = self.viewer.add_layer(L.selection_layer(cells, name=SELECTION_LAYER))
        for layer in (conf, dist):
            layer.colorbar.visible = True
        self._layers = {TYPES_LAYER: layer_types, CONFIDENCE_LAYER: conf, DISTANCE_LAYER: dist,
                        SELECTION_LAYER: sel}
        self._update_hover_features()
        # the cells layer on top, as outlines, and active: hovering shows every feature
        cells.contour = 1
        cells.opacity = 0.6
        self.viewer.layers.move(self.viewer.layers.index(cells), len(self.viewer.layers))
        self.viewer.layers.selection.active = cells
        self.selected = pd.Index([], dtype=object, name=CELL_ID)
        self.legend.set_annotation(annotation)
        annotation.connect(self._on_annotation_changed)
        with _blocked(self.threshold_slider):
            self.threshold_slider.setValue(int(round(annotation.min_confidence * 100)))
        with _blocked(self.distance_spin):
            self.distance_spin.setValue(annotation.max_distance or 0.0)
        self._update_threshold_label()
        self._refresh_assign_types()
        self.show_map(self.map_combo.currentText())
        self._set_has_result(True)
        self.show_parameters(False)
        self.session.results["transfer"] = {"result": self.result, "annotation": annotation,
                                            "select_cells": self.select_cells}
        self.session.changed.emit("transfer")
        self.transferred.emit(annotation)

    def _update_hover_features(self) -> None:
        from ..layers import add_cell_features

        t = self.annotation.table
        add_cell_features(self._cells_layer, t[[c for c in HOVER_COLUMNS if c in t.columns]])

    def _on_annotation_changed(self, what: str) -> None:
        from ..layers import update_annotation_layer

        layer = self._layers.get(TYPES_LAYER)
        if layer is not None and layer in self.viewer.layers:
            update_annotation_layer(layer, self.annotation, what)
        if what in ("threshold", "edit", "undo", "redo"):
            self._update_hover_features()
        if what in ("edit", "undo", "redo", "types"):
            self._refresh_assign_types()
        self._update_undo_buttons()

    def show_map(self, name: str) -> None:
        """Show one of the result maps (cell types, confidence, distance), hide the others."""
        for key in MAPS:
            layer = self._layers.get(key)
            if layer is not None and layer in self.viewer.layers:
                layer.visible = key == name
        if self.map_combo.currentText() != name:
            with _blocked(self.map_combo):
                self.map_combo.setCurrentText(name)

    def _set_has_result(self, has: bool) -> None:
        for box in (self.results_box, self.review_box, self.export_box):
            box.setEnabled(has)
        self._update_undo_buttons()

    # ------------------------------------------------------------------ threshold
    def _on_threshold_slider(self, value: int) -> None:
        self._apply_threshold()

    def set_threshold(self, min_confidence: float = 0.0, max_distance: float | None = None) -> None:
        """Set the Unassigned threshold (as moving the slider does)."""
        with _blocked(self.distance_spin):
            self.distance_spin.setValue(max_distance or 0.0)
        self.threshold_slider.setValue(int(round(min_confidence * 100)))
        self._apply_threshold()

    def _apply_threshold(self) -> None:
        if self.annotation is None:
            return
        conf = self.threshold_slider.value() / 100.0
        dist = self.distance_spin.value() or None
        if conf != self.annotation.min_confidence or dist != self.annotation.max_distance:
            self.annotation.set_threshold(conf, dist)
        self._update_threshold_label()

    def _update_threshold_label(self) -> None:
        if self.annotation is None:
            return
        from .._constants import UNASSIGNED

        n = int(self.annotation.counts(include_empty=True).get(UNASSIGNED, 0))
        self.threshold_label.setText(
            f"Unassigned below confidence {self.threshold_slider.value() / 100:.2f}: {n:,} cells")

    # ------------------------------------------------------------------ selection
    def select_cells(self, cell_ids, add: bool = False) -> None:
        """Select cells by id (``add`` keeps the current selection) and outline them."""
        from ..layers import set_selected_cells

        ids = pd.Index(np.asarray(list(cell_ids), dtype=object).astype(str), name=CELL_ID)
        if self.annotation is not None:
            ids = ids[ids.isin(self.annotation.cell_ids)]
        self.selected = self.selected.union(ids) if add else ids.unique()
        layer = self._layers.get(SELECTION_LAYER)
        if layer is not None and self.annotation is not None:
            pos = self.annotation.cell_ids.get_indexer(self.selected)
            set_selected_cells(layer, self.annotation.label_ids[pos[pos >= 0]])
        self.selection_label.setText(f"{len(self.selected):,} cells selected")

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
                self.runner._fail("draw polygons first (Draw polygons)")
                return 0
            layer = self.viewer.layers[POLYGON_LAYER]
        q = self.session.query
        if q is None or "spatial" not in q.obsm:
            self.runner._fail("the run's centroids are not loaded")
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
            self.runner._fail("select cells first (click, polygons or a legend entry)")
            return None
        if not name:
            self.runner._fail("choose or type a cell type name")
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

    # ------------------------------------------------------------------ save / export
    def _sources(self) -> tuple:
        s = self.session
        return tuple(str(p) for p in (s.xenium_root, s.reference_path) if p)

    def _inputs(self) -> dict:
        s = self.session
        return {"query": str(s.xenium_root) if s.xenium_root else None,
                "reference": str(s.reference_path) if s.reference_path else None}

    def _ask_path(self, path, title: str, filter_: str, folder: bool = False):
        if path:
            return str(path)
        if folder:
            out, _ = QFileDialog.getSaveFileName(self, title, "annotation.zarr", filter_)
        else:
            out, _ = QFileDialog.getSaveFileName(self, title, "", filter_)
        return out or None

    def _export(self, writer, path, title, filter_, **kwargs):
        if self.annotation is None:
            self.runner._fail("run a transfer (or open a saved session) first")
            return None
        path = self._ask_path(path, title, filter_, folder=kwargs.pop("_folder", False))
        if not path:
            return None
        try:
            out = writer(path, self.annotation, sources=self._sources(), **kwargs)
        except CellamaInputError as err:
            self.runner._fail(str(err))
            return None
        from napari.utils.notifications import show_info

        show_info(f"napari-cellama: wrote {out}")
        return out

    def save_session(self, path=None, overwrite: bool = False):
        """Save everything as a SpatialData zarr (reopen with :meth:`open_session`)."""
        from ..io.export import write_spatialdata

        s = self.session
        if not path:  # the save dialog has asked whether to replace an existing session
            path = self._ask_path(None, "Save session (SpatialData zarr)", "zarr (*.zarr)", folder=True)
            if not path:
                return None
            overwrite = True
        return self._export(write_spatialdata, path, "Save session (SpatialData zarr)", "zarr (*.zarr)",
                            _folder=True, result=self.result, query=s.query, xenium=s.xenium_root,
                            inputs=self._inputs(), overwrite=overwrite)

    def export_h5ad(self, path=None):
        from ..io.export import write_h5ad

        return self._export(write_h5ad, path, "Export cells table (.h5ad)", "AnnData (*.h5ad)",
                            result=self.result, query=self.session.query, inputs=self._inputs())

    def export_explorer_csv(self, path=None):
        from ..io.export import write_explorer_csv

        return self._export(write_explorer_csv, path, "Export Xenium Explorer cell groups", "CSV (*.csv)")

    def export_csv(self, path=None):
        from ..io.export import write_cells_csv

        return self._export(write_cells_csv, path, "Export per-cell CSV", "CSV (*.csv)")

    def open_session(self, path=None):
        """Restore a saved session: layers, legend, threshold and manual edits."""
        from ..io.export import load_session

        if not path:
            path = QFileDialog.getExistingDirectory(self, "Open saved session (.zarr folder)")
            if not path:
                return None
        try:
            saved = load_session(path)
            self._ensure_run_open(saved)
        except CellamaInputError as err:
            self.runner._fail(str(err))
            return None
        self.result = saved.transfer_result()
        self.show_annotation(saved.annotation)
        self.status.setText(f"restored {len(saved.table):,} cells from {path}")
        return saved

    def _ensure_run_open(self, saved) -> None:
        try:
            self._cells()
            return
        except CellamaInputError:
            pass
        root = (saved.inputs or {}).get("query")
        if not root or not Path(root).exists():
            raise CellamaInputError(
                f"open the Xenium run of this session first (recorded at {root or 'an unknown path'})")
        self.viewer.open(root, plugin="napari-cellama")
        from ..session import get_session

        get_session(self.viewer).update("opened", xenium_root=Path(root))


def _model_label(model) -> str:
    """Short name of a model id for the status line (the offline default by its model name)."""
    from .._constants import OFFLINE_MODEL_PACKAGE

    if not model:
        return "default model"
    path = Path(str(model))
    if OFFLINE_MODEL_PACKAGE in path.parts:
        return "all-MiniLM-L6-v2, offline"
    return path.name if path.name not in ("model", "") else path.parent.name


def _create(layer_data):
    from napari.layers import Layer

    return Layer.create(*layer_data)


class _blocked:
    """Context manager blocking a widget's signals."""

    def __init__(self, widget):
        self.widget = widget

    def __enter__(self):
        self.widget.blockSignals(True)

    def __exit__(self, *exc):
        self.widget.blockSignals(False)
