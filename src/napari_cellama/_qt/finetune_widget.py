"""Dock widget "Fine-tune model".

:class:`FinetuneWidget` gathers the fine-tuning parameters (reference file, label column,
pairs, epochs, ...) and runs :func:`napari_cellama.core.iter_finetune` through the shared
:class:`~napari_cellama._qt._runner.JobRunner`: a progress bar (also napari's) showing the
step and the loss, and Cancel between two steps (the output folder is then left
untouched). The finished model's folder becomes the session's ``finetuned_model`` (the
marker-prototype dock offers it as its model) and can be typed as the model of a transfer.
The marker-prototype dock lives in :mod:`.prototypes_widget` (re-exported here).

Widgets only gather parameters and start the work: the science is in ``napari_cellama.core``.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._constants import (
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
    DEFAULT_PROTOTYPE_FRACTION,
    STAGE_FINETUNE,
)
from ..validators import CellamaInputError
from ._dock import SessionDock
from ._fold import MARKER_FILES, fold_button, path_row, scrolling, set_unfolded
from ._runner import JobRunner
from .prototypes_widget import PROTOTYPE_LAYER_NAME, PrototypesWidget  # noqa: F401 (napari.yaml names it here)

NO_LABEL = "(none: unsupervised)"


def finetune_job(reference_path, out, log, job: dict):
    """The engine generator run by the widget: read the reference, fine-tune, return the result.

    ``job``: ``{"options": FinetuneOptions, "overwrite": bool}``."""
    from ..core import iter_finetune
    from ..io import read_reference

    reference = read_reference(reference_path)
    return (yield from iter_finetune(reference, out, options=job["options"], overwrite=job["overwrite"], log=log))


# --------------------------------------------------------------------------- fine-tuning
class FinetuneWidget(SessionDock):
    """Fine-tune the sentence model on a reference; progress with loss; Cancel."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.log = None
        self.result = None
        self.last_progress = None

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
        form.addRow("Reference", path_row(self.reference, "Reference", "AnnData (*.h5ad)", self._reference_changed))
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
        form.addRow("Markers", path_row(self.markers, "Marker table", MARKER_FILES))
        form.addRow("Prototype pairs share", self.prototype_fraction)
        form.addRow("Output folder", path_row(self.out, "Output folder"))
        form.addRow(self.overwrite)

        self.run_button = QPushButton("Run fine-tuning")
        self.run_button.clicked.connect(self.run)
        self.runner = JobRunner(self, describe=self._describe)
        self.cancel_button = self.runner.cancel_button
        self.cancel_button.clicked.connect(
            lambda: self.status.setText("cancelling after the current step ..."))
        self.runner.started.connect(lambda _what: self.run_button.setEnabled(False))
        self.runner.finished.connect(self._on_finished)
        self.runner.progressed.connect(self._on_progress)
        self.runner.failed.connect(lambda message: self.status.setText(f"failed: {message}"))
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.runner.widget, 1)
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
        return self.runner.busy

    # ---- parameters
    def _from_session(self) -> None:
        s = self.session
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
        from ..core import FinetuneLog, FinetuneOptions

        try:
            params = self.parameters()
            ref_path, out, overwrite = params.pop("reference"), params.pop("out"), params.pop("overwrite")
            options = FinetuneOptions(**params)  # checked here: a bad value never reaches the thread
        except CellamaInputError as err:
            self.runner.fail(str(err))
            return None
        self.log = FinetuneLog()
        self.result = None
        self.last_progress = None
        self.status.setText("fine-tuning started ...")
        job = {"options": options, "overwrite": overwrite}
        return self.runner.start(finetune_job, ref_path, out, self.log, job, on_done=self._on_returned,
                                 what="fine-tuning")

    def cancel(self) -> None:
        """Stop the run at the next step; nothing is written."""
        if self.busy:
            self.cancel_button.click()

    def _on_progress(self, value) -> None:
        self.last_progress = value
        stage, done, total = value
        if self.runner.was_cancelled:
            return
        if stage == STAGE_FINETUNE and self.log is not None and self.log.losses:
            self.status.setText(f"step {done}/{total}, loss {self.log.loss:.4f} "
                                f"(mean of last 20 steps {self.log.smoothed_loss():.4f})")

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_info

        self.result = result
        self.session.finetuned_model = str(result.model_path)
        self.status.setText(result.summary())
        show_info(f"fine-tuned model saved to {result.model_path}")

    def _on_finished(self) -> None:
        if self.runner.was_cancelled and self.result is None:
            self.status.setText("cancelled; nothing was written")
        self.run_button.setEnabled(True)
