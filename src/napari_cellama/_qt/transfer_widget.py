"""Dock widget "2. Transfer labels, review and export".

Reads the run and reference loaded by "1. Load" (:func:`napari_cellama.session.get_session`),
runs :func:`napari_cellama.core.iter_transfer` off the GUI thread (progress per stage,
Cancel), and shows the result as layers made by :mod:`napari_cellama.layers`:

* ``cell types``: every cell painted with its type (legend in the dock: tick to show or
  hide a type, "show only"), relabelled live by the ``Unassigned`` threshold;
* ``confidence`` and ``distance to reference``: colour-mapped maps with colour bars;
* ``selected cells``: outlines of the cells picked for review.

The shown transfer is the session's ``transfer`` field
(:class:`~napari_cellama.session.TransferState`): a run or an opened session writes it, and
this dock (like the niche and plots docks) draws what the session holds when it changes.
Review (:mod:`.transfer_review`): pick cells by clicking, polygons or a legend row, assign a
type, undo / redo. Hovering a cell (the cells layer is kept on top and active) shows
cell_id, type, confidence, runner-up, source and sentence from the layer's features.
Export (:mod:`.transfer_export`): SpatialData zarr session, ``.h5ad``, Xenium Explorer
cell-groups CSV, per-cell CSV.
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
)

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_TOP_K,
    DISTANCE,
    RUNNER_UP,
    SENTENCE,
    SOURCE,
)
from ..validators import CellamaInputError
from ._dock import SessionDock
from ._fold import fold_button, set_unfolded
from ._runner import JobRunner
from ._wiring import rewire
from .confidence_histogram import ConfidenceHistogram
from .embedding_form import EmbeddingForm
from .provisional_view import ProvisionalView
from .selection_view import SelectionView, cells_layer
from .transfer_export import ExportMixin
from .transfer_job import transfer_job  # noqa: F401 (the dock's job; tests swap it here)
from .transfer_maps import (  # noqa: F401 (public names)
    CONFIDENCE_LAYER,
    DISTANCE_LAYER,
    MAPS,
    NICHE_MAP,
    TYPES_LAYER,
    MapsMixin,
)
from .transfer_rerun import CARRY, RerunMixin, carry_work
from .transfer_review import POLYGON_LAYER, ReviewMixin  # noqa: F401 (POLYGON_LAYER: public name)

HOVER_COLUMNS = (CELL_TYPE, CONFIDENCE, RUNNER_UP, SOURCE, SENTENCE)


class TransferWidget(ReviewMixin, ExportMixin, RerunMixin, MapsMixin, SessionDock):
    """Label transfer, review and export (see the module docstring)."""

    transferred = Signal(object)
    """Emitted with the :class:`~napari_cellama.core.Annotation` when results are shown."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        from .legend import TypeLegend

        self.result = None
        self.annotation = None
        self._cells_layer = None
        self._layers: dict = {}
        self.selection_view = SelectionView(napari_viewer, self.session)

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
        self.cache_check = QCheckBox("cache embeddings on disk (re-runs are fast)")
        self.cache_check.setChecked(True)
        form.addRow("label column", self.label_combo)
        form.addRow("top-k genes", self.top_k_spin)
        form.addRow("model", model_row)
        form.addRow("metadata", self.metadata_list)
        form.addRow("k neighbours", self.k_spin)
        self.embedding = EmbeddingForm(form)  # device + embedding mode rows (issue 15)
        self.device_combo, self.mode_combo = self.embedding.device_combo, self.embedding.mode_combo
        form.addRow("", self.cache_check)
        self.run_button = QPushButton("Run transfer")
        self.run_button.clicked.connect(lambda: self.run())
        self.runner = JobRunner(self)
        self.runner.started.connect(lambda _what: self.run_button.setEnabled(False))
        self.runner.finished.connect(lambda: self.run_button.setEnabled(self.session.ready))
        self.track_jobs(self.runner)  # session.running; a closed dock's run still reaches the session
        self.provisional = ProvisionalView(self)  # a run's provisional labels (surrogate mode), then the final ones

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
        self.legend = TypeLegend()
        self.legend.row_activated.connect(self.select_type)
        rform.addLayout(map_row)
        rform.addWidget(self.threshold_label)
        rform.addWidget(self.threshold_slider)
        rform.addWidget(ConfidenceHistogram(self.session, self))  # confidences, a line at the threshold
        rform.addLayout(dist_row)
        rform.addWidget(self.legend, 1)
        rform.addWidget(self._build_niche_legend(), 1)
        rform.addLayout(self._build_compare_row())

        self.review_box = self._build_review_box()
        self.export_box = self._build_export_box()

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

        self.session.events.inputs.connect(self._on_inputs)
        self.session.events.transfer.connect(self._on_transfer)
        self._on_inputs()
        self._set_has_result(False)
        if self.session.transfer is not None:  # a transfer shown before this dock was opened
            self._on_transfer(self.session.transfer)
            if self.session.niche is not None:
                self._on_niche(self.session.niche)
        from .autosave_hook import install_autosave

        self.autosave = install_autosave(self)  # auto-saves; after a crash, offers the last one back

    def release(self) -> None:
        """A closed dock lets go of the session and its annotation (its job has ended)."""
        events = self.session.events
        for signal, handler in ((events.inputs, self._on_inputs), (events.transfer, self._on_transfer),
                                (events.niche, self._on_niche),
                                (events.previous_transfer, self._update_compare_buttons)):
            signal.disconnect(handler)
        rewire(self.annotation, None, self._annotation_handlers())
        self.annotation = None

    # ------------------------------------------------------------------ session / parameters
    def _on_inputs(self) -> None:
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
            "device": self.embedding.device(),
            "mode": self.embedding.mode(),
            "cache": self.cache_check.isChecked(),
        }

    # ------------------------------------------------------------------ run
    def run(self, sync: bool = False, keep: str | None = None):
        """Start the transfer (in a worker; ``sync=True`` runs it here, for tests and scripts).

        When the shown annotation holds work (manual labels, threshold, niches) the dock asks
        whether to carry it over onto the new run; ``keep="carry"`` or ``"discard"`` answers
        in advance. Returns None when cancelled.
        """
        from functools import partial

        s = self.session
        if not s.ready:
            self.runner.fail("load a Xenium run and a reference first (widget 1)")
            return None
        if self.runner.busy:
            self.runner.fail("a label transfer is already running; wait for it or press Cancel")
            return None
        choice = self.rerun_choice(keep)
        if choice is None:
            self.status.setText("re-run cancelled: the shown annotation is unchanged")
            return None
        p = self.parameters()
        args = (s.query, s.reference, p["label_key"], p["top_k"], p["model"], p["k"], p["metadata"],
                p["device"], p["mode"], p["cache"], s.xenium_root)
        self._run_inputs = self._run_record(p["label_key"])  # provenance: the inputs of THIS run
        on_done = partial(self._on_result, carry=choice == CARRY)
        job = self.provisional.wrap(transfer_job)
        if sync:
            return self.runner.run_sync(job, *args, on_done=on_done)
        return self.runner.start(job, *args, on_done=on_done, what="label transfer")

    def _on_result(self, result, carry: bool = False) -> None:
        """A run finished: it becomes the session's transfer; the run it replaces is kept as
        ``session.previous_transfer`` (its work carried over when ``carry``)."""
        from ..core.provenance import annotation_from_result

        s = self.session
        annotation = annotation_from_result(result, getattr(self, "_run_inputs", None), palette=s.type_colors,
                                            label_ids=s.label_of_cell.reindex(result.table.index).to_numpy())
        previous = s.transfer
        note = (f"{len(result.table):,} cells annotated ({_model_label(result.params.get('model'))}, "
                f"{result.params.get('embedding_mode', 'exact')} embedding)")
        if previous is not None:
            if carry:
                done = carry_work(previous.annotation, annotation)
                note += (f"; carried over {done['manual']:,} manual labels, threshold "
                         f"{done['threshold']:.2f}, {done['niches']:,} niche cells")
            note += "; the previous run is kept (Compare with previous run…)"
            s.previous_transfer = previous
        self.show_annotation(annotation, result)
        self.status.setText(note)
        if self.detached or not self.isVisible():
            from napari.utils.notifications import show_info

            show_info(f"napari-cellama: label transfer finished: {note}. It is shown in the “cell types” "
                      "layer; open “2. Transfer, review and export” to review it.")

    # ------------------------------------------------------------------ layers
    def _cells(self):
        cells = cells_layer(self.viewer, self.session)
        if cells is None:
            raise CellamaInputError("no cells layer: open the Xenium run first")
        return cells

    def show_annotation(self, annotation, result=None) -> None:
        """Make ``annotation`` (with the engine's ``result``, if any) the session's transfer;
        the layers, legend and review controls follow (:meth:`_on_transfer`)."""
        from ..session import TransferState

        if annotation.label_ids is None:
            feats = self._cells().features
            label_of = pd.Series(feats["index"].to_numpy(np.int64), index=feats[CELL_ID].astype(str))
            annotation.set_label_ids(label_of.reindex(annotation.cell_ids).fillna(0).to_numpy(np.int64))
        annotation.use_palette(self.session.type_colors)
        self.session.transfer = TransferState(result, annotation)

    def _on_transfer(self, state) -> None:
        """The session's transfer changed: build its layers and bind the review controls."""
        from .. import layers as L

        annotation = None if state is None else state.annotation
        rewire(self.annotation, annotation, self._annotation_handlers())
        self.annotation = annotation
        self.result = None if state is None else state.result
        self.legend.set_annotation(annotation)
        if annotation is None:
            self._set_has_result(False)
            return
        cells = self._cells()
        for name in MAPS:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._cells_layer = cells
        t = annotation.table
        ids = t.index
        layer_types = self.viewer.add_layer(_create(L.annotation_layer_data(cells, annotation, name=TYPES_LAYER)))
        conf = self.viewer.add_layer(_create(L.cell_values_layer_data(
            cells, ids, t[CONFIDENCE].to_numpy(), name=CONFIDENCE_LAYER, colormap="viridis",
            contrast_limits=(0.0, 1.0))))
        dist = self.viewer.add_layer(_create(L.cell_values_layer_data(
            cells, ids, t[DISTANCE].to_numpy(), name=DISTANCE_LAYER, colormap="magma")))
        for layer in (conf, dist):
            layer.colorbar.visible = True
        self._layers = {TYPES_LAYER: layer_types, CONFIDENCE_LAYER: conf, DISTANCE_LAYER: dist}
        self._update_hover_features()
        # the cells layer on top, as outlines, and active: hovering shows every feature
        cells.contour = 1
        cells.opacity = 0.6
        self.viewer.layers.move(self.viewer.layers.index(cells), len(self.viewer.layers))
        self.selection_view.layer()  # the outlines, over the maps and under the cells
        self.selection_view.raise_above_maps()
        self.viewer.layers.selection.active = cells
        self.session.selection.clear()
        with _blocked(self.threshold_slider):
            self.threshold_slider.setValue(int(round(annotation.min_confidence * 100)))
        with _blocked(self.distance_spin):
            self.distance_spin.setValue(annotation.max_distance or 0.0)
        self._update_threshold_label()
        self._refresh_assign_types()
        self.show_map(self.map_combo.currentText())
        self._set_has_result(True)
        self.show_parameters(False)
        self.transferred.emit(annotation)

    def _update_hover_features(self, labels_only: bool = False) -> None:
        from .hover_features import HoverFeatures

        self._hover = getattr(self, "_hover", None) or HoverFeatures(HOVER_COLUMNS)
        self._hover.update(self._cells_layer, self.annotation, labels_only)

    def _annotation_handlers(self) -> dict:
        return {"labels_changed": self._on_labels_changed, "types_changed": self._on_types_changed,
                "colors_changed": self._on_colors_changed, "visibility_changed": self._on_colors_changed}

    def _types_layer(self):
        layer = self._layers.get(TYPES_LAYER)
        return layer if layer is not None and layer in self.viewer.layers else None

    def _on_labels_changed(self, _cause: str) -> None:
        from ..layers import refresh_annotation_labels

        if (layer := self._types_layer()) is not None:
            refresh_annotation_labels(layer, self.annotation)
        self._update_hover_features(labels_only=True)
        self._update_undo_buttons()
        self._update_threshold_label()

    def _on_types_changed(self) -> None:
        from ..layers import refresh_annotation_labels

        if (layer := self._types_layer()) is not None:
            refresh_annotation_labels(layer, self.annotation)
        self._refresh_assign_types()

    def _on_colors_changed(self) -> None:
        from ..layers import refresh_annotation_colors

        if (layer := self._types_layer()) is not None:
            refresh_annotation_colors(layer, self.annotation)

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
