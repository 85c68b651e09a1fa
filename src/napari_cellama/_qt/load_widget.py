"""Dock widget "1. Load Xenium and reference".

The biologist chooses a Xenium run (a folder, or the layers of a run already open), a
labelled reference ``.h5ad`` and its label column (only categorical-like ``obs`` columns
are offered). "Load and check panel" then, off the GUI thread, reads the run (adding its
layers when they are not open yet), reads the reference, and reports **before anything
is embedded**: panel size, reference genes, shared genes, the share of reference counts
the shared genes carry, cells with fewer than top-k detected shared genes, and for each
reference type how many of its top marker genes the panel measures (low coverage flagged).

The result becomes the inputs of the viewer's :class:`napari_cellama.session.CellamaSession`
(``get_session(viewer)``, signal ``session.events.inputs``) for the other docks. The jobs
are in :mod:`.load_jobs` (run by the shared JobRunner), the report in :mod:`.load_report`. A second section adds the transcripts of
chosen genes as points (one colour per gene, subsampled above a limit, count shown).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
)

from .._constants import (
    CELL_ID,
    DEFAULT_COVERAGE_MARKERS,
    DEFAULT_MAX_TRANSCRIPTS,
    DEFAULT_TOP_K,
    KIND_CELLS,
    KIND_CENTROIDS,
    KIND_IMAGE,
)
from ..validators import CellamaInputError
from ._dock import SessionDock
from ._runner import JobRunner
from .load_jobs import LoadResult, demo_job, load_job, read_obs_columns, transcripts_job
from .load_report import fill_coverage_table, panel_report_html

LOADING = "loading"
READING_COLUMNS = "reading reference columns"

# --------------------------------------------------------------------------- widget


class LoadWidget(SessionDock):
    """Choose a Xenium run and a reference; check the panel before any embedding."""

    loaded = Signal(object)
    """Emitted with the viewer's :class:`CellamaSession` after a successful load."""
    columns_ready = Signal(list)
    """Emitted with the label-column candidates of the chosen reference."""
    transcripts_added = Signal(object)
    """Emitted with the added transcripts Points layer."""
    failed = Signal(str)
    """Emitted with the error message when a step fails (also shown as a notification)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self._pending_label: str | None = None
        self._step: str | None = None
        self.runner = JobRunner(self)
        self.runner.started.connect(lambda _what: self._set_busy(True))
        self.runner.finished.connect(lambda: self._set_busy(False))
        self.runner.failed.connect(self._on_failed)
        self.runner.failed.connect(self.failed)
        self.progress_bar = self.runner.bar

        layout = QVBoxLayout(self)

        # --- Xenium run
        run_box = QGroupBox("Xenium run")
        run_form = QVBoxLayout(run_box)
        self.source_folder = QRadioButton("Folder")
        self.source_layers = QRadioButton("Layers already open")
        self._source_group = QButtonGroup(self)
        self._source_group.addButton(self.source_folder)
        self._source_group.addButton(self.source_layers)
        self.source_folder.setChecked(True)
        row = QHBoxLayout()
        row.addWidget(self.source_folder)
        self.xenium_edit = QLineEdit()
        self.xenium_edit.setPlaceholderText("Xenium output folder (with experiment.xenium)")
        row.addWidget(self.xenium_edit, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_xenium)
        row.addWidget(browse)
        run_form.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.source_layers)
        self.cells_combo = QComboBox()
        self.cells_combo.setToolTip("cells layer of a Xenium run opened with napari-cellama")
        row.addWidget(self.cells_combo, 1)
        run_form.addLayout(row)
        self.demo_button = QPushButton("Use demo data (Xenium run + reference)")
        self.demo_button.clicked.connect(self.use_demo)
        run_form.addWidget(self.demo_button)
        layout.addWidget(run_box)

        # --- reference
        ref_box = QGroupBox("Reference (labelled scRNA .h5ad)")
        ref_form = QFormLayout(ref_box)
        row = QHBoxLayout()
        self.reference_edit = QLineEdit()
        self.reference_edit.setPlaceholderText("reference .h5ad")
        self.reference_edit.editingFinished.connect(
            lambda: self.set_reference_path(self.reference_edit.text())
        )
        row.addWidget(self.reference_edit, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_reference)
        row.addWidget(browse)
        ref_form.addRow("File", row)
        self.label_combo = QComboBox()
        self.label_combo.setToolTip(
            "obs column with the cell types (categorical-like columns only)"
        )
        ref_form.addRow("Label column", self.label_combo)
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 500)
        self.top_k_spin.setValue(DEFAULT_TOP_K)
        self.top_k_spin.setToolTip(
            "genes per cell sentence; cells with fewer detected shared genes are counted"
        )
        ref_form.addRow("Top-k genes", self.top_k_spin)
        self.markers_spin = QSpinBox()
        self.markers_spin.setRange(1, 200)
        self.markers_spin.setValue(DEFAULT_COVERAGE_MARKERS)
        self.markers_spin.setToolTip(
            "top marker genes per reference type checked against the panel"
        )
        ref_form.addRow("Markers per type", self.markers_spin)
        layout.addWidget(ref_box)

        # --- run
        self.load_button = QPushButton("Load and check panel")
        self.load_button.clicked.connect(self.load)
        layout.addWidget(self.load_button)
        layout.addWidget(self.runner.widget)

        # --- report
        self.summary_label = QLabel("Choose a Xenium run and a reference, then load.")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.RichText)
        self.summary_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.summary_label)
        self.coverage_table = QTableWidget(0, 4)
        self.coverage_table.setHorizontalHeaderLabels(
            ["Cell type", "Cells", "Markers in panel", "Coverage"]
        )
        self.coverage_table.verticalHeader().setVisible(False)
        self.coverage_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.coverage_table.setSelectionMode(QAbstractItemView.NoSelection)
        header = self.coverage_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in (1, 2, 3):
            header.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        self.coverage_table.setMinimumHeight(160)
        layout.addWidget(self.coverage_table, 1)

        # --- transcripts
        tx_box = QGroupBox("Transcripts")
        tx_layout = QVBoxLayout(tx_box)
        self.gene_filter = QLineEdit()
        self.gene_filter.setPlaceholderText("filter genes (load a run first)")
        self.gene_filter.textChanged.connect(self._filter_genes)
        tx_layout.addWidget(self.gene_filter)
        self.gene_list = QListWidget()
        self.gene_list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.gene_list.setMaximumHeight(120)
        tx_layout.addWidget(self.gene_list)
        row = QHBoxLayout()
        row.addWidget(QLabel("At most"))
        self.max_points_spin = QSpinBox()
        self.max_points_spin.setRange(1_000, 10_000_000)
        self.max_points_spin.setSingleStep(50_000)
        self.max_points_spin.setValue(DEFAULT_MAX_TRANSCRIPTS)
        self.max_points_spin.setToolTip(
            "above this, a uniform random subset of the transcripts is shown"
        )
        self.max_points_spin.setMinimumWidth(140)
        row.addWidget(self.max_points_spin)
        row.addWidget(QLabel("points"))
        self.transcripts_button = QPushButton("Show transcripts")
        self.transcripts_button.clicked.connect(lambda: self.show_transcripts())
        row.addWidget(self.transcripts_button)
        tx_layout.addLayout(row)
        self.transcripts_label = QLabel("")
        self.transcripts_label.setWordWrap(True)
        tx_layout.addWidget(self.transcripts_label)
        layout.addWidget(tx_box)

        self.setMinimumWidth(380)
        self.viewer.layers.events.inserted.connect(self._refresh_cells_layers)
        self.viewer.layers.events.removed.connect(self._refresh_cells_layers)
        self._refresh_cells_layers()

    # ------------------------------------------------------------------ public API

    def set_xenium_path(self, path: str | Path) -> None:
        self.xenium_edit.setText(str(path))
        self.source_folder.setChecked(True)

    def use_open_layers(self, layer_name: str | None = None) -> None:
        """Use the layers of a run already open (its cells layer; default: the first one)."""
        self._refresh_cells_layers()
        if layer_name is not None:
            idx = self.cells_combo.findText(layer_name)
            if idx < 0:
                raise ValueError(f"no cells layer named {layer_name!r}")
            self.cells_combo.setCurrentIndex(idx)
        self.source_layers.setChecked(True)

    def set_reference_path(
        self, path: str | Path, label_column: str | None = None, _chained: bool = False
    ):
        """Choose the reference; its label columns are read off the GUI thread."""
        path = str(path).strip()
        if self.reference_edit.text() != path:
            self.reference_edit.setText(path)
        self._pending_label = label_column
        self.label_combo.clear()
        if not path:
            return None
        return self._start(read_obs_columns, (path,), self._on_columns, READING_COLUMNS, _chained)

    def set_label_column(self, name: str) -> None:
        idx = self.label_combo.findText(name)
        if idx < 0:
            raise ValueError(f"{name!r} is not a label column of the reference")
        self.label_combo.setCurrentIndex(idx)

    def use_demo(self):
        """Build (first time) and select the demo run and its reference."""
        if self._refused():
            return None
        return self._start(demo_job, (), self._on_demo, "preparing demo data")

    def load(self):
        """Start loading with the current choices; returns the worker (None on bad input, or
        while a step that uses the loaded inputs runs: ``session.running``)."""
        if self._refused():
            return None
        try:
            args = self._load_arguments()
        except CellamaInputError as err:
            self._step = LOADING
            self._report_error(str(err))
            return None
        return self._start(load_job, args, self._on_loaded, LOADING)

    def _refused(self) -> bool:
        """Refuse to replace the inputs while a transfer (or niche clustering) uses them: its
        labels, and the exports that record its inputs, would not match the loaded run."""
        running = self.session.running
        if not running:
            return False
        self._step = None
        self._report_error(f"{' and '.join(running)} is running on the loaded run and reference: wait for it "
                           "to finish (or press Cancel in its dock) before loading another run or reference")
        return True

    def _on_failed(self, message: str) -> None:
        """A failed load or reference read: the previous reference's report and the session's
        reference go, the error stays in the report."""
        if self._step not in (LOADING, READING_COLUMNS):
            return
        import html

        self.summary_label.setText(f"<span style='color:#e05050'><b>Could not load</b>: {html.escape(message)}"
                                   "</span><br>The previous reference's report was cleared; choose a "
                                   "reference and load again.")
        self.coverage_table.setRowCount(0)
        s = self.session
        if s.reference is not None or s.panel is not None:
            s.update(reference=None, reference_path=None, label_key=None, panel=None, coverage=None)

    def show_transcripts(self, genes=None):
        """Add the transcripts of ``genes`` (default: the selected genes) as points."""
        session = self.session
        if genes is None:
            genes = [item.text() for item in self.gene_list.selectedItems()]
        root = session.xenium_root
        if root is None:
            self._report_error("load a Xenium run first (Load and check panel)")
            return None
        if not genes:
            self._report_error("select one or more genes in the list to show their transcripts")
            return None
        return self._start(
            transcripts_job,
            (root, list(genes), int(self.max_points_spin.value())),
            self._on_transcripts,
            "reading transcripts",
        )

    # ------------------------------------------------------------------ internals

    def _cells_layers(self) -> list:
        from ..layers import find_layers

        return find_layers(self.viewer.layers, KIND_CELLS)

    def _refresh_cells_layers(self, *_):
        current = self.cells_combo.currentText()
        names = [layer.name for layer in self._cells_layers()]
        self.cells_combo.blockSignals(True)
        self.cells_combo.clear()
        self.cells_combo.addItems(names)
        if current in names:
            self.cells_combo.setCurrentIndex(names.index(current))
        self.cells_combo.blockSignals(False)
        self.source_layers.setEnabled(bool(names))
        if not names and self.source_layers.isChecked():
            self.source_folder.setChecked(True)
        elif names and not self.xenium_edit.text().strip():
            self.source_layers.setChecked(True)  # a run was opened (e.g. dropped): use its layers

    def _load_arguments(self) -> tuple:
        from ..io.xenium import xenium_root
        from ..layers import find_layers, layer_info

        cells_features = None
        if self.source_layers.isChecked():
            name = self.cells_combo.currentText()
            if not name or name not in self.viewer.layers:
                raise CellamaInputError(
                    "no open Xenium cells layer; open a Xenium folder first or choose a folder"
                )
            layer = self.viewer.layers[name]
            xenium_path = layer_info(layer).get("xenium_root")
            cells_features = layer.features[["index", CELL_ID]].copy()
        else:
            xenium_path = self.xenium_edit.text().strip()
            if not xenium_path:
                raise CellamaInputError(
                    "choose a Xenium output folder (or use the layers already open)"
                )
            root = xenium_root(xenium_path)
            if root is None:
                raise CellamaInputError(
                    f"{xenium_path} is not a Xenium output folder (no experiment.xenium)"
                )
            open_cells = find_layers(self.viewer.layers, KIND_CELLS, root)
            if open_cells:  # its layers are open already: do not add them twice
                cells_features = open_cells[0].features[["index", CELL_ID]].copy()
        reference = self.reference_edit.text().strip()
        if not reference:
            raise CellamaInputError("choose a reference .h5ad")
        label_key = self.label_combo.currentText()
        if not label_key:
            raise CellamaInputError(
                "choose the reference's label column (wait until its columns are listed)"
            )
        return (
            xenium_path,
            cells_features,
            reference,
            label_key,
            int(self.top_k_spin.value()),
            int(self.markers_spin.value()),
        )

    @property
    def busy(self) -> bool:
        """True while a step runs in a worker thread."""
        return self.runner.busy

    @property
    def last_error(self) -> str | None:
        """The message of the last failed step (None after a successful start)."""
        return self.runner.last_error

    def _start(self, job, args, on_done, what: str, chained: bool = False):
        self._step = None  # a refusal to start is no failed load
        worker = self.runner.start(job, *args, on_done=on_done, what=what, chained=chained)
        if worker is not None:
            self._step = what
        return worker

    def _report_error(self, message: str) -> None:
        self.runner.fail(message)

    def _set_busy(self, busy: bool) -> None:
        for w in (self.load_button, self.demo_button, self.transcripts_button):
            w.setEnabled(not busy)

    def _on_columns(self, columns: list) -> None:
        self.label_combo.clear()
        self.label_combo.addItems(columns)
        preferred = [c for c in (self._pending_label, "cell_type", "celltype", "cell_types") if c]
        for name in preferred:
            if name in columns:
                self.label_combo.setCurrentIndex(columns.index(name))
                break
        self._pending_label = None
        self.columns_ready.emit(list(columns))

    def _on_demo(self, demo) -> None:
        self.set_xenium_path(demo.xenium_dir)
        self.set_reference_path(demo.reference_h5ad, "cell_type", _chained=True)

    def _on_loaded(self, result: LoadResult) -> None:
        import napari

        from ..layers import find_layers

        for data, kwargs, kind in result.layer_data:
            self.viewer.add_layer(napari.layers.Layer.create(data, kwargs, kind))
        root = result.xenium_root
        names = {}
        for key, kind in (
            ("cells", KIND_CELLS),
            ("centroids", KIND_CENTROIDS),
            ("image", KIND_IMAGE),
        ):
            found = find_layers(self.viewer.layers, kind, root)
            if found:
                names[key] = found[0].name
        session = self.session
        session.update(
            query=result.query,
            reference=result.reference,
            label_key=result.label_key,
            panel=result.panel,
            coverage=result.coverage,
            top_k=result.top_k,
            xenium_root=root,
            reference_path=result.reference_path,
            layer_names=names,
        )
        self._show_report(result)
        self._fill_genes([str(g) for g in result.query.var_names])
        self.loaded.emit(session)

    def _show_report(self, r: LoadResult) -> None:
        n_markers = int(self.markers_spin.value())
        self.summary_label.setText(panel_report_html(r, n_markers))
        fill_coverage_table(self.coverage_table, r.coverage)

    def _fill_genes(self, genes: list[str]) -> None:
        self.gene_list.clear()
        self.gene_list.addItems(sorted(genes, key=str.upper))
        self.gene_filter.setPlaceholderText(f"filter {len(genes)} genes")
        self._filter_genes(self.gene_filter.text())

    def _filter_genes(self, text: str) -> None:
        text = text.strip().upper()
        for i in range(self.gene_list.count()):
            item = self.gene_list.item(i)
            item.setHidden(bool(text) and text not in item.text().upper())

    def _on_transcripts(self, layer_data) -> None:
        import napari

        data, kwargs, kind = layer_data
        layer = self.viewer.add_layer(napari.layers.Layer.create(data, kwargs, kind))
        info = kwargs["metadata"]["cellama"]
        per_gene = ", ".join(f"{g} {n:,}" for g, n in info["per_gene_total"].items())
        if info["n_shown"] < info["n_total"]:
            text = (
                f"showing {info['n_shown']:,} of {info['n_total']:,} transcripts (uniform "
                f"random subset above {int(self.max_points_spin.value()):,}); "
                f"per gene: {per_gene}"
            )
        else:
            text = f"showing all {info['n_total']:,} transcripts; per gene: {per_gene}"
        self.transcripts_label.setText(text)
        self.transcripts_added.emit(layer)

    def _browse_xenium(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Xenium output folder")
        if path:
            self.set_xenium_path(path)

    def _browse_reference(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference", "", "AnnData (*.h5ad)")
        if path:
            self.set_reference_path(path)
