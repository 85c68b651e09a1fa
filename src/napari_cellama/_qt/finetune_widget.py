"""Fine-tuning and marker-prototype panels.

* :class:`FinetuneWidget` gathers the fine-tuning parameters (reference file, label
  column, pairs, epochs, ...), runs :func:`napari_cellama.core.iter_finetune` in a
  ``thread_worker`` with a napari progress bar showing the step and the loss, and can be
  cancelled between two steps (the output folder is then left untouched). The finished
  model's folder is stored in the viewer's session (``session.results["finetuned_model"]``)
  and can be typed as the model of a transfer.
* :class:`PrototypesWidget` annotates the loaded run without a reference: every cell gets
  the type of the nearest marker prototype (:func:`napari_cellama.core.iter_prototype_annotation`)
  from the shipped default table or a marker file. The result goes into the cells layer's
  features (``prototype_cell_type``, ``prototype_confidence``, ...) and a "prototype cell
  types" layer made by :mod:`napari_cellama.layers`.

Widgets only gather parameters, start the work and add layers: the science is in
``napari_cellama.core``.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_FINETUNE_AUGMENT_KEEP,
    DEFAULT_FINETUNE_AUGMENT_VIEWS,
    DEFAULT_FINETUNE_BATCH_SIZE,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_LEARNING_RATE,
    DEFAULT_FINETUNE_PAIRS,
    DEFAULT_FINETUNE_PCS,
    DEFAULT_FINETUNE_TOP_K,
    DEFAULT_FINETUNE_VALIDATION,
    DEFAULT_FINETUNE_WARMUP,
    DEFAULT_MARKERS,
    DEFAULT_PROTOTYPE_CELL_GENES,
    DEFAULT_PROTOTYPE_FRACTION,
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
    STAGE_FINETUNE,
)
from ..validators import CellamaInputError
from ._fold import fold_button, scrolling, set_unfolded

NO_LABEL = "(none: unsupervised)"
PROTOTYPE_LAYER_NAME = "prototype cell types"
FINETUNED_MODEL_KEY = "finetuned_model"


def _notify_error(err: Exception) -> None:
    from napari.utils.notifications import show_error

    msg = str(err) if isinstance(err, CellamaInputError) else f"{type(err).__name__}: {err}"
    show_error(msg)


def _path_row(edit: QLineEdit, button_text: str, pick) -> QWidget:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    btn = QPushButton(button_text)
    btn.clicked.connect(pick)
    lay.addWidget(btn)
    return row


class _ProgressRelay:
    """Drives one ``napari.utils.progress`` bar from ``(stage, done, total)`` tuples."""

    def __init__(self, describe=None):
        from napari.utils import progress

        self.bar = progress(total=0)
        self.describe = describe

    def __call__(self, value) -> None:
        stage, done, total = value
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        text = self.describe(stage, done, total) if self.describe else f"{stage}: {done}/{total}"
        self.bar.set_description(text)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------- fine-tuning
class FinetuneWidget(QWidget):
    """Fine-tune the sentence model on a reference; progress with loss; Cancel."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.log = None
        self.result = None
        self._relay = None
        self.last_progress = None
        self._cancel_requested = False

        self.reference = QLineEdit()
        self.reference.setPlaceholderText("labelled reference .h5ad")
        self.reference.editingFinished.connect(self._reference_changed)
        self.label_key = QComboBox()
        self.label_key.setEditable(True)
        self.label_key.addItem(NO_LABEL)
        self.metadata = QLineEdit()
        self.metadata.setPlaceholderText("optional: obs columns, comma separated (pairs differing -> 0)")
        self.top_k = QLineEdit(" ".join(map(str, DEFAULT_FINETUNE_TOP_K)))
        self.top_k.setToolTip("genes per sentence; several values (e.g. '16 20 24') mix sentence lengths")
        self.pairs = QSpinBox()
        self.pairs.setRange(16, 10_000_000)
        self.pairs.setSingleStep(500)
        self.pairs.setValue(DEFAULT_FINETUNE_PAIRS)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100)
        self.epochs.setValue(DEFAULT_FINETUNE_EPOCHS)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(DEFAULT_FINETUNE_BATCH_SIZE)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(7)
        self.learning_rate.setRange(1e-7, 1e-2)
        self.learning_rate.setSingleStep(1e-5)
        self.learning_rate.setValue(DEFAULT_FINETUNE_LEARNING_RATE)
        self.warmup = QDoubleSpinBox()
        self.warmup.setRange(0.0, 0.9)
        self.warmup.setSingleStep(0.05)
        self.warmup.setValue(DEFAULT_FINETUNE_WARMUP)
        self.validation = QDoubleSpinBox()
        self.validation.setRange(0.0, 0.5)
        self.validation.setSingleStep(0.05)
        self.validation.setValue(DEFAULT_FINETUNE_VALIDATION)
        self.augment = QSpinBox()
        self.augment.setRange(0, 64)
        self.augment.setValue(DEFAULT_FINETUNE_AUGMENT_VIEWS)
        self.augment.setSpecialValueText("off")
        self.augment.setToolTip("training sentences also come from this many down-sampled copies of each "
                                "reference cell (as a shallower assay such as Xenium sees it)")
        self.augment_keep = QDoubleSpinBox()
        self.augment_keep.setRange(0.05, 0.95)
        self.augment_keep.setSingleStep(0.05)
        self.augment_keep.setValue(DEFAULT_FINETUNE_AUGMENT_KEEP)
        self.augment_keep.setToolTip("share of a cell's counts kept in a down-sampled copy")
        self.n_pcs = QSpinBox()
        self.n_pcs.setRange(2, 200)
        self.n_pcs.setValue(DEFAULT_FINETUNE_PCS)
        self.n_pcs.setToolTip("principal components whose cosine similarity labels each pair of cells")
        self.eval_steps = QSpinBox()
        self.eval_steps.setRange(0, 1_000_000)
        self.eval_steps.setSpecialValueText("only at the end")
        self.eval_steps.setToolTip("validate every N steps and keep the best weights (0: validate only at the end)")
        self.keep_best = QCheckBox("keep the best-validated weights")
        self.keep_best.setChecked(True)
        self.use_prototypes = QCheckBox("prototype guidance")
        self.use_prototypes.setToolTip("pull each cell type toward the sentence of its markers (needs a label column "
                                       "whose values are the marker table's types)")
        self.markers = QLineEdit(DEFAULT_MARKERS)
        self.prototype_fraction = QDoubleSpinBox()
        self.prototype_fraction.setRange(0.01, 1.0)
        self.prototype_fraction.setSingleStep(0.05)
        self.prototype_fraction.setValue(DEFAULT_PROTOTYPE_FRACTION)
        self.out = QLineEdit()
        self.out.setPlaceholderText("new folder for the fine-tuned model")
        self.overwrite = QCheckBox("replace an earlier fine-tuned model")

        form = QFormLayout()
        form.addRow("Reference", _path_row(self.reference, "...", self._pick_reference))
        form.addRow("Label column", self.label_key)
        form.addRow("Metadata", self.metadata)
        form.addRow("Top-k genes", self.top_k)
        form.addRow("Pairs", self.pairs)
        # the optimiser and validation settings fold away (defaults suit most references)
        self.training_box = QGroupBox()
        self.training_toggle = fold_button("Training options", self.training_box, expanded=False)
        training = QFormLayout(self.training_box)
        training.setContentsMargins(6, 4, 4, 4)
        training.addRow("Epochs", self.epochs)
        training.addRow("Batch size", self.batch_size)
        training.addRow("Learning rate", self.learning_rate)
        training.addRow("Warm-up share", self.warmup)
        training.addRow("Down-sampled copies", self.augment)
        training.addRow("Counts kept in a copy", self.augment_keep)
        training.addRow("PCA components", self.n_pcs)
        training.addRow("Validation share", self.validation)
        training.addRow("Validate every", self.eval_steps)
        training.addRow(self.keep_best)
        form.addRow(self.training_toggle)
        form.addRow(self.training_box)
        form.addRow(self.use_prototypes)
        form.addRow("Markers", _path_row(self.markers, "...", self._pick_markers))
        form.addRow("Prototype pairs share", self.prototype_fraction)
        form.addRow("Output folder", _path_row(self.out, "...", self._pick_out))
        form.addRow(self.overwrite)

        self.run_button = QPushButton("Run fine-tuning")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        # the form scrolls when the dock is short; Run / Cancel and the status stay in view
        inner = QVBoxLayout()
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addLayout(form)
        inner.addStretch(1)
        lay = QVBoxLayout(self)
        self.form_area = scrolling(inner)
        lay.addWidget(self.form_area, 1)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        self._from_session()

    def show_training_options(self, visible: bool = True) -> None:
        """Unfold (or fold away) the optimiser, augmentation and validation settings."""
        set_unfolded(self.training_toggle, self.training_box, visible)

    @property
    def busy(self) -> bool:
        """True while a fine-tuning run is going on."""
        return not self.run_button.isEnabled()

    # ---- parameters
    def _from_session(self) -> None:
        from ..session import get_session

        s = get_session(self.viewer)
        if s.reference_path and not self.reference.text():
            self.reference.setText(str(s.reference_path))
        if s.reference is not None:
            self._set_columns(list(s.reference.obs.columns), s.label_key)
        elif self.reference.text():
            self._reference_changed()

    def _set_columns(self, columns, selected=None) -> None:
        current = selected or self.label_key.currentText()
        self.label_key.clear()
        self.label_key.addItem(NO_LABEL)
        self.label_key.addItems([str(c) for c in columns])
        if current and current in columns:
            self.label_key.setCurrentText(current)

    def _reference_changed(self) -> None:
        path = Path(self.reference.text().strip()).expanduser()
        if not path.is_file() or not path.name.endswith(".h5ad"):
            return
        try:
            import anndata as ad

            a = ad.read_h5ad(path, backed="r")
            cols = list(a.obs.columns)
            a.file.close()
        except Exception:  # noqa: BLE001 - the run reports a broken file properly
            return
        self._set_columns(cols)

    def _pick_reference(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference", "", "AnnData (*.h5ad)")
        if path:
            self.reference.setText(path)
            self._reference_changed()

    def _pick_markers(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Marker table", "", "Markers (*.csv *.tsv *.json *.gmt)")
        if path:
            self.markers.setText(path)

    def _pick_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.out.setText(path)

    def parameters(self) -> dict:
        """The fine-tuning arguments the form describes (raises CellamaInputError if incomplete)."""
        ref = self.reference.text().strip()
        out = self.out.text().strip()
        if not ref:
            raise CellamaInputError("choose a reference .h5ad")
        if not out:
            raise CellamaInputError("choose an output folder for the fine-tuned model")
        try:
            top_k = [int(v) for v in self.top_k.text().replace(",", " ").split()]
        except ValueError:
            raise CellamaInputError(f"top-k must be whole numbers, got {self.top_k.text()!r}") from None
        label = self.label_key.currentText().strip()
        label = None if label in ("", NO_LABEL) else label
        metadata = [c.strip() for c in self.metadata.text().split(",") if c.strip()]
        prototypes = None
        if self.use_prototypes.isChecked():
            prototypes = self.markers.text().strip() or DEFAULT_MARKERS
        return {
            "reference": ref,
            "out": out,
            "label_key": label,
            "metadata": metadata,
            "top_k": top_k,
            "n_pairs": self.pairs.value(),
            "epochs": self.epochs.value(),
            "batch_size": self.batch_size.value(),
            "learning_rate": self.learning_rate.value(),
            "warmup": self.warmup.value(),
            "validation_fraction": self.validation.value(),
            "augment_views": self.augment.value(),
            "augment_keep": self.augment_keep.value(),
            "n_pcs": self.n_pcs.value(),
            "eval_steps": self.eval_steps.value() or None,
            "keep_best": self.keep_best.isChecked(),
            "prototypes": prototypes,
            "prototype_fraction": self.prototype_fraction.value(),
            "overwrite": self.overwrite.isChecked(),
        }

    # ---- running
    def _describe(self, stage, done, total) -> str:
        if stage == STAGE_FINETUNE and self.log is not None and self.log.losses:
            return f"{stage}: step {done}/{total}, loss {self.log.loss:.4f}"
        return f"{stage}: {done}/{total}"

    def run(self):
        """Start fine-tuning in a worker thread; returns the worker (None if the form is incomplete)."""
        from napari.qt.threading import thread_worker

        from ..core import FinetuneLog, iter_finetune
        from ..io import read_reference

        try:
            params = self.parameters()
        except CellamaInputError as err:
            _notify_error(err)
            return None
        self.log = FinetuneLog()
        log = self.log
        self.result = None
        self._cancel_requested = False
        ref_path = params.pop("reference")
        out = params.pop("out")

        @thread_worker
        def job():
            reference = read_reference(ref_path)
            return (yield from iter_finetune(reference, out, log=log, **params))

        self.worker = job()
        self._relay = _ProgressRelay(self._describe)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("fine-tuning started ...")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop the run at the next step; nothing is written."""
        if self.worker is not None and self.busy:
            self._cancel_requested = True
            self.worker.quit()
            self.status.setText("cancelling after the current step ...")

    def _on_yielded(self, value) -> None:
        self.last_progress = value
        if self._relay is not None:
            self._relay(value)
        stage, done, total = value
        if self._cancel_requested:
            return
        if stage == STAGE_FINETUNE and self.log is not None and self.log.losses:
            self.status.setText(f"step {done}/{total}, loss {self.log.loss:.4f} "
                                f"(mean of last 20 steps {self.log.smoothed_loss():.4f})")

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_info

        from ..session import get_session

        self.result = result
        get_session(self.viewer).results[FINETUNED_MODEL_KEY] = str(result.model_path)
        self.status.setText(result.summary())
        show_info(f"fine-tuned model saved to {result.model_path}")

    def _on_error(self, err) -> None:
        self.status.setText(f"failed: {err}")
        _notify_error(err)

    def _on_aborted(self) -> None:
        self.status.setText("cancelled; nothing was written")

    def _on_finished(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._cancel_requested and self.result is None:
            self.status.setText("cancelled; nothing was written")
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


# --------------------------------------------------------------------------- prototypes
class PrototypesWidget(QWidget):
    """Reference-free annotation of the loaded run by the nearest marker prototype."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.result = None
        self._relay = None

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
        bl.addWidget(_path_row(self.markers, "...", self._pick_markers))
        form = QFormLayout()
        form.addRow("Top-k genes", self.top_k)
        form.addRow("Sentence genes", self.cell_genes)
        form.addRow("Gene order", self.rank)
        form.addRow("Model", _path_row(self.model, "...", self._pick_model))
        form.addRow("Temperature", self.temperature)
        form.addRow("Min. confidence", self.min_confidence)
        self.run_button = QPushButton("Assign cell types")
        self.run_button.clicked.connect(self.run)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(box)
        lay.addLayout(form)
        lay.addWidget(self.run_button)
        lay.addWidget(self.status)
        lay.addStretch(1)
        from ..session import get_session

        tuned = get_session(self.viewer).results.get(FINETUNED_MODEL_KEY)
        if tuned:
            self.model.setText(str(tuned))

    @property
    def busy(self) -> bool:
        """True while cells are being assigned."""
        return not self.run_button.isEnabled()

    def _pick_markers(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Marker table", "", "Markers (*.csv *.tsv *.json *.gmt)")
        if path:
            self.markers.setText(path)

    def _pick_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model folder")
        if path:
            self.model.setText(path)

    def run(self):
        """Annotate the session's query in a worker thread; returns the worker (None on bad input)."""
        from napari.qt.threading import thread_worker

        from ..core import iter_prototype_annotation, read_markers
        from ..session import get_session

        session = get_session(self.viewer)
        try:
            if session.query is None:
                raise CellamaInputError("load a Xenium run first (panel 1. Load Xenium and reference)")
            markers = read_markers(None if self.use_default.isChecked() else (self.markers.text().strip() or None))
        except CellamaInputError as err:
            _notify_error(err)
            return None
        query = session.query
        model = self.model.text().strip() or None
        kwargs = {"temperature": self.temperature.value(), "min_confidence": self.min_confidence.value(),
                  "cell_genes": self.cell_genes.currentData(), "rank": self.rank.currentData()}
        top_k = self.top_k.value()

        @thread_worker
        def job():
            return (yield from iter_prototype_annotation(query, markers, top_k, model, **kwargs))

        self.worker = job()
        self._relay = _ProgressRelay()
        self.worker.yielded.connect(self._relay)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.status.setText("assigning cell types ...")
        self.worker.start()
        return self.worker

    def _on_returned(self, result) -> None:
        from .. import layers
        from .._constants import CELLS_LAYER_NAME, KIND_CELLS
        from ..session import get_session

        self.result = result
        session = get_session(self.viewer)
        session.results["prototypes"] = result
        table = result.table
        cols = {CELL_TYPE: f"{PROTOTYPE_PREFIX}{CELL_TYPE}", CONFIDENCE: f"{PROTOTYPE_PREFIX}{CONFIDENCE}",
                DISTANCE: f"{PROTOTYPE_PREFIX}{DISTANCE}", RUNNER_UP: f"{PROTOTYPE_PREFIX}{RUNNER_UP}",
                SIMILARITY_GAP: f"{PROTOTYPE_PREFIX}{SIMILARITY_GAP}"}
        values = table[list(cols)].rename(columns=cols)
        name = session.layer_names.get("cells", CELLS_LAYER_NAME)
        cells = self.viewer.layers[name] if name in self.viewer.layers else None
        if cells is None:
            found = layers.find_layers(self.viewer.layers, KIND_CELLS)
            cells = found[0] if found else None
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
            layers.add_cell_features(cells, values)
            data, kw, kind = layers.cell_categories_layer_data(
                cells, list(table.index.astype(str)), list(table[CELL_TYPE].astype(str)), name=PROTOTYPE_LAYER_NAME)
            from napari.layers import Layer

            if PROTOTYPE_LAYER_NAME in self.viewer.layers:
                self.viewer.layers.remove(PROTOTYPE_LAYER_NAME)
            self.viewer.add_layer(Layer.create(data, kw, kind))
            self.viewer.layers.selection.active = cells  # hovering shows the cell's prototype_* features
        else:
            lines.append("no cells layer in the viewer: results kept in the session only")
        self.status.setText("\n".join(lines))

    def _on_error(self, err) -> None:
        self.status.setText(f"failed: {err}")
        _notify_error(err)

    def _on_finished(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        self.run_button.setEnabled(True)
