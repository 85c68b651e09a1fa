"""Dock widget "Marker prototypes": reference-free annotation by the nearest marker prototype.

Every cell of the loaded run gets the type of the nearest marker prototype
(:func:`napari_cellama.core.iter_prototype_annotation`) from the shipped default table or a
marker file, run through the shared :class:`~napari_cellama._qt._runner.JobRunner`
(progress, Cancel). The result is the session's ``prototypes`` field; when it changes, this
dock adds the cells layer's features (``prototype_cell_type``, ``prototype_confidence``, ...)
and a "prototype cell types" layer made by :mod:`napari_cellama.layers`, painted with the
session's type colours (:class:`~napari_cellama.core.palette.TypeColors`: a type has the
colour it has in the transfer's ``cell types``). A model fine-tuned in this viewer is
offered as the model.

The box "Use the prototype labels" (:mod:`.prototypes_annotation`) makes the prototype run
the shown annotation (legend, threshold, review, export in "2. Transfer, review and export"),
or combines it with the transfer: prototype labels where the transfer says Unknown.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_PROTOTYPE_CELL_GENES,
    DEFAULT_PROTOTYPE_RANK,
    DEFAULT_PROTOTYPE_TEMPERATURE,
    DEFAULT_PROTOTYPE_TOP_K,
    DISTANCE,
    PROTOTYPE_GENES_ALL,
    PROTOTYPE_GENES_MARKERS,
    PROTOTYPE_PREFIX,
    RANK_EXPRESSION,
    RANK_SCALED,
    RUNNER_UP,
    SIMILARITY_GAP,
    TRANSFERRED_TYPE,
)
from ..validators import CellamaInputError
from ._dock import SessionDock
from ._fold import MARKER_FILES, path_row
from ._runner import JobRunner
from .prototypes_annotation import PrototypeAnnotationBox
from .selection_view import cells_layer

PROTOTYPE_LAYER_NAME = "prototype cell types"


def prototypes_job(query, markers, options, model):
    """The engine generator run by the widget (a plain function, testable without Qt)."""
    from ..core import iter_prototype_annotation

    return (yield from iter_prototype_annotation(query, markers, options, model=model))


class PrototypesWidget(SessionDock):
    """Reference-free annotation of the loaded run by the nearest marker prototype."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.result = None

        self.use_default = QCheckBox("shipped default table (immune, stromal, epithelial)")
        self.use_default.setChecked(True)
        self.markers = QLineEdit()
        self.markers.setPlaceholderText("marker file: CSV cell_type,gene / JSON / GMT")
        self.use_default.toggled.connect(lambda on: self.markers.setEnabled(not on))
        self.markers.setEnabled(False)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 1000)
        self.top_k.setValue(DEFAULT_PROTOTYPE_TOP_K)
        self.cell_genes = QComboBox()
        self.cell_genes.addItem("marker genes of the table", PROTOTYPE_GENES_MARKERS)
        self.cell_genes.addItem("all genes of the panel", PROTOTYPE_GENES_ALL)
        self.cell_genes.setCurrentIndex(self.cell_genes.findData(DEFAULT_PROTOTYPE_CELL_GENES))
        self.cell_genes.setToolTip("genes a cell's sentence may name; marker genes describe the cell in the "
                                   "prototypes' own words")
        self.rank = QComboBox()
        self.rank.addItem("above the gene's average (scaled)", RANK_SCALED)
        self.rank.addItem("expression value", RANK_EXPRESSION)
        self.rank.setCurrentIndex(self.rank.findData(DEFAULT_PROTOTYPE_RANK))
        self.rank.setToolTip("order of the genes in a cell's sentence: by how far each stands above its mean over "
                             "all cells (z-score of log-normalised expression), or by the raw value")
        self.model = QLineEdit()
        self.model.setPlaceholderText("default model, or a (fine-tuned) model folder")
        self.temperature = QDoubleSpinBox()
        self.temperature.setDecimals(3)
        self.temperature.setRange(0.001, 10.0)
        self.temperature.setSingleStep(0.01)
        self.temperature.setValue(DEFAULT_PROTOTYPE_TEMPERATURE)
        self.min_confidence = QDoubleSpinBox()
        self.min_confidence.setRange(0.0, 1.0)
        self.min_confidence.setSingleStep(0.05)

        box = QGroupBox("Markers")
        bl = QVBoxLayout(box)
        bl.addWidget(self.use_default)
        bl.addWidget(path_row(self.markers, "Marker table", MARKER_FILES))
        form = QFormLayout()
        form.addRow("Top-k genes", self.top_k)
        form.addRow("Sentence genes", self.cell_genes)
        form.addRow("Gene order", self.rank)
        form.addRow("Model", path_row(self.model, "Model folder"))
        form.addRow("Temperature", self.temperature)
        form.addRow("Min. confidence", self.min_confidence)
        self.run_button = QPushButton("Assign cell types")
        self.run_button.clicked.connect(self.run)
        self.runner = JobRunner(self)
        self.runner.started.connect(lambda _what: self.run_button.setEnabled(False))
        self.runner.finished.connect(lambda: self.run_button.setEnabled(True))
        self.runner.failed.connect(lambda message: self.status.setText(f"failed: {message}"))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(box)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.runner.widget)
        lay.addWidget(self.status)
        self.annotation_box = PrototypeAnnotationBox(napari_viewer, self.session, self)
        lay.addWidget(self.annotation_box)
        lay.addStretch(1)

        self._on_finetuned(self.session.finetuned_model)
        self.session.events.finetuned_model.connect(self._on_finetuned)
        self.session.events.prototypes.connect(self._on_prototypes)
        self.session.type_colors.changed.connect(self._on_type_color)
        self.session.type_colors.renamed.connect(self._on_type_renamed)

    @property
    def busy(self) -> bool:
        """True while cells are being assigned."""
        return self.runner.busy

    def _on_finetuned(self, path) -> None:
        if path and not self.model.text().strip():
            self.model.setText(str(path))

    def run(self):
        """Annotate the session's query in a worker thread; returns the worker (None on bad input)."""
        from ..core import PrototypeOptions, read_markers

        try:
            if self.session.query is None:
                raise CellamaInputError("load a Xenium run first (panel 1. Load Xenium and reference)")
            markers = read_markers(None if self.use_default.isChecked() else (self.markers.text().strip() or None))
            options = PrototypeOptions(
                top_k=self.top_k.value(), temperature=self.temperature.value(),
                min_confidence=self.min_confidence.value(), cell_genes=self.cell_genes.currentData(),
                rank=self.rank.currentData())
        except CellamaInputError as err:
            self.runner.fail(str(err))
            return None
        model = self.model.text().strip() or None
        self.status.setText("assigning cell types ...")
        return self.runner.start(prototypes_job, self.session.query, markers, options, model,
                                 on_done=self._on_returned, what="marker prototypes")

    def _on_returned(self, result) -> None:
        self.result = result
        self.session.prototypes = result

    def _on_prototypes(self, result) -> None:
        """The session's prototype result changed: features, layer and summary."""
        from .. import layers

        if result is None:
            return
        table = result.table
        cols = {CELL_TYPE: f"{PROTOTYPE_PREFIX}{CELL_TYPE}", CONFIDENCE: f"{PROTOTYPE_PREFIX}{CONFIDENCE}",
                DISTANCE: f"{PROTOTYPE_PREFIX}{DISTANCE}", RUNNER_UP: f"{PROTOTYPE_PREFIX}{RUNNER_UP}",
                SIMILARITY_GAP: f"{PROTOTYPE_PREFIX}{SIMILARITY_GAP}"}
        values = table[list(cols)].rename(columns=cols)
        cells = cells_layer(self.viewer, self.session)
        counts = table[CELL_TYPE].value_counts()
        ms = result.marker_set
        lines = [ms.summary().splitlines()[0] + " (hover for the list)",
                 "cells per type: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
        if ms.empty_types:
            lines.insert(1, f"no marker in the panel, no prototype: {', '.join(ms.empty_types)}")
        if result.unassigned_note():
            lines.insert(1, result.unassigned_note())
        self.status.setToolTip(ms.summary())
        if cells is not None:
            from napari.layers import Layer

            layers.add_cell_features(cells, values)
            types = list(table[CELL_TYPE].astype(str))
            data, kw, kind = layers.cell_categories_layer_data(
                cells, list(table.index.astype(str)), types, name=PROTOTYPE_LAYER_NAME,
                colors=self.session.type_colors.colors(sorted(set(types))))
            if PROTOTYPE_LAYER_NAME in self.viewer.layers:
                self.viewer.layers.remove(PROTOTYPE_LAYER_NAME)
            self.viewer.add_layer(Layer.create(data, kw, kind))
            self.viewer.layers.selection.active = cells  # hovering shows the cell's prototype_* features
        else:
            lines.append("no cells layer in the viewer: results kept in the session only")
        self.status.setText("\n".join(lines))

    def _on_type_color(self, _name: str) -> None:
        """A type got another colour (e.g. in the transfer's legend): repaint the prototype layer."""
        from .. import layers

        if PROTOTYPE_LAYER_NAME not in self.viewer.layers:
            return
        layer = self.viewer.layers[PROTOTYPE_LAYER_NAME]
        info = layers.layer_info(layer)
        colors = self.session.type_colors.colors(info["categories"])
        layers.set_category_colors(layer, colors, info.get("hidden", ()))

    def _on_type_renamed(self, old: str, new: str) -> None:
        """A type was renamed (e.g. in the transfer's legend): the prototype run calls it ``new``
        too (its table, its types, its layer), so exports and combinations agree."""
        result = self.session.prototypes
        if result is None or old not in result.types:
            return
        for col in (CELL_TYPE, TRANSFERRED_TYPE, RUNNER_UP):
            if col in result.table:
                values = result.table[col].astype(object)
                result.table[col] = values.where(values != old, new)
        result.types = [new if t == old else t for t in result.types]  # one per prototype, merges too
        self._on_prototypes(result)
