"""Dock widget "3. Niche clusters": split chosen cell types by what surrounds them.

Reads the current labels of the transfer ("2. Transfer, review and export": the session's
``results["transfer"]["annotation"]``, threshold and manual edits applied) and runs
:func:`napari_cellama.core.niche.iter_niches` off the GUI thread through the shared
:class:`~napari_cellama._qt._runner.JobRunner` (progress per stage, Cancel). Parameters:
the cell types to cluster, the neighbourhood (k nearest cells or a radius in microns),
the sentence (gene sentence + niche part, or niche part only), and the method (Leiden with
a resolution, or KMeans with a number of clusters). "Re-cluster" runs
:func:`~napari_cellama.core.niche.iter_recluster` on the same embeddings (no re-embedding).

Results
-------
* layer ``niche clusters`` (:func:`napari_cellama.layers.niche_layer_data`): the clustered
  cells coloured by cluster, every other cell dimmed grey; the transfer's map layers are
  hidden while it is shown (tick them in the layer list to see them again);
* a legend: one row per cluster (tick to show / hide it, click to highlight its cells,
  which outlines them in ``selected cells`` and makes them the transfer widget's selection,
  ready for "Assign to selected"); its cell count and top marker genes;
* a heatmap of cluster x neighbour cell type composition (mean fraction of each type among
  the cluster's cells' spatial neighbours; rows sum to 1); clicking a row highlights the
  cluster's cells;
* a table of the marker genes of every cluster (Wilcoxon against the other clusters);
  clicking a row highlights that cluster's cells.

Each cell's cluster is stored with :meth:`~napari_cellama.core.Annotation.set_niche_clusters`
(so a saved session and every export carry a ``niche_cluster`` column) and in the cells
layer's ``features`` (shown on hover). The result is also kept in
``session.results["niche"]`` and announced with ``session.changed.emit("niche")``. A
restored session shows its saved clusters (layer, legend, highlight); composition and
markers are not saved with it, so they appear after a new Run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._constants import (
    CELL_ID,
    DEFAULT_EMBED_MODE,
    DEFAULT_NICHE_RADIUS,
    DEFAULT_NICHE_WIDGET_CLUSTERS,
    DEFAULT_NICHE_WIDGET_RESOLUTION,
    DEFAULT_SPATIAL_NEIGHBORS,
    EMBED_MODES,
    GENE,
    KIND_CELL_CATEGORIES,
    KIND_CELL_VALUES,
    KIND_CELLS,
    MARKER_LOGFC,
    MARKER_PCT_IN,
    MARKER_PCT_REST,
    MARKER_PVAL_ADJ,
    NICHE_CLUSTER,
    NICHE_METHOD_KMEANS,
    NICHE_METHOD_LEIDEN,
    NICHE_MODE_BOTH,
    NICHE_MODE_NICHE,
    UNASSIGNED,
)
from ..validators import CellamaInputError
from ._runner import JobRunner

NEIGHBOURHOODS = (("k nearest cells", "k"), ("within a radius (µm)", "radius"))
SENTENCE_MODES = (("genes + niche", NICHE_MODE_BOTH), ("niche only", NICHE_MODE_NICHE))
METHODS = (("Leiden", NICHE_METHOD_LEIDEN), ("KMeans", NICHE_METHOD_KMEANS))
RESOLUTION_TIP = (
    "Leiden resolution: higher gives more, smaller clusters.\n"
    "The default is 0.3, not scanpy's 1.0: niche embeddings of one cell type are close to each "
    "other, and at 1.0 Leiden over-splits them (on the demo run it cuts the 3 planted niches of "
    "CD14+ monocytes into 7 clusters, 0.3 finds 3). Raise it to look for finer niches; "
    "'Re-cluster' tries a new value without embedding again."
)
MARKER_TABLE_COLUMNS = (
    (NICHE_CLUSTER, "niche"),
    (GENE, "gene"),
    (MARKER_LOGFC, "log2 FC"),
    (MARKER_PCT_IN, "% in niche"),
    (MARKER_PCT_REST, "% in rest"),
    (MARKER_PVAL_ADJ, "adj. p"),
)


def niche_job(query, labels, cell_types, k, radius, mode, resolution, n_clusters, model, device, cache,
              embed_mode=None):
    """The engine generator run by the widget (a plain function, testable without Qt)."""
    from ..core.embedding_options import make_embedder
    from ..core.niche import iter_niches

    embedder = make_embedder(model=model or None, device=device, mode=embed_mode, cache=cache or None)
    result = yield from iter_niches(query, labels, cell_types, k=k, radius=radius, mode=mode,
                                    resolution=resolution, n_clusters=n_clusters, embedder=embedder)
    return result


def recluster_job(result, query, resolution, n_clusters):
    """Re-cluster the embeddings of ``result`` (generator; no re-embedding)."""
    from ..core.niche import iter_recluster

    out = yield from iter_recluster(result, query, resolution=resolution, n_clusters=n_clusters)
    return out


def _swatch(color) -> QIcon:
    from ..core.annotation import to_hex

    pm = QPixmap(14, 14)
    pm.fill(QColor(to_hex(color)))
    return QIcon(pm)


def _natural(names) -> list[str]:
    """Names in natural order: "2" before "10"."""
    import re

    def key(text):
        return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", text)]

    return sorted((str(n) for n in names), key=key)


class NicheLegend(QWidget):
    """One row per niche cluster: tick to show / hide it, click to highlight its cells."""

    visibility_changed = Signal(object)
    """Emitted with the set of hidden cluster names."""
    cluster_clicked = Signal(str)
    """Emitted with a cluster name when its row is clicked (not its check box)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["niche", "cells", "top markers"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        self.tree.setMinimumHeight(110)
        self.tree.setMaximumHeight(180)
        self.tree.itemChanged.connect(self._on_item_changed)
        self.tree.itemClicked.connect(lambda item, _col: self.cluster_clicked.emit(item.data(0, Qt.UserRole)))
        self.only_button = QPushButton("Show only selected")
        self.only_button.clicked.connect(self.show_only_selected)
        self.all_button = QPushButton("Show all")
        self.all_button.clicked.connect(lambda: self.set_hidden(()))
        buttons = QHBoxLayout()
        buttons.addWidget(self.only_button)
        buttons.addWidget(self.all_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Niches (tick to show, click to highlight their cells)"))
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        self._updating = False

    def set_clusters(self, names, counts, colors, markers=None) -> None:
        """Rebuild the rows: ``counts`` / ``colors`` / ``markers`` are keyed by cluster name."""
        self._updating = True
        self.tree.clear()
        for name in names:
            top = ", ".join((markers or {}).get(name, [])[:3])
            item = QTreeWidgetItem([f"niche {name}", str(int(counts.get(name, 0))), top])
            item.setData(0, Qt.UserRole, name)
            item.setIcon(0, _swatch(colors[name]))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(0, Qt.Checked)
            item.setTextAlignment(1, Qt.AlignRight)
            self.tree.addTopLevelItem(item)
        for col in range(2):
            self.tree.resizeColumnToContents(col)
        self._updating = False

    def names(self) -> list[str]:
        return [self.tree.topLevelItem(i).data(0, Qt.UserRole) for i in range(self.tree.topLevelItemCount())]

    def item(self, name: str):
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if it.data(0, Qt.UserRole) == name:
                return it
        return None

    def hidden(self) -> set[str]:
        return {
            self.tree.topLevelItem(i).data(0, Qt.UserRole)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).checkState(0) != Qt.Checked
        }

    def set_checked(self, name: str, visible: bool) -> None:
        """Tick or untick a cluster (as a click on its check box does)."""
        it = self.item(name)
        if it is not None:
            it.setCheckState(0, Qt.Checked if visible else Qt.Unchecked)

    def set_hidden(self, hidden) -> None:
        hidden = {str(h) for h in hidden}
        self._updating = True
        for name in self.names():
            self.item(name).setCheckState(0, Qt.Unchecked if name in hidden else Qt.Checked)
        self._updating = False
        self.visibility_changed.emit(self.hidden())

    def select(self, name: str) -> None:
        it = self.item(name)
        if it is not None:
            self.tree.clearSelection()
            it.setSelected(True)
            self.tree.scrollToItem(it)

    def selected(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.UserRole) if items else None

    def show_only_selected(self) -> None:
        name = self.selected()
        if name is not None:
            self.set_hidden(set(self.names()) - {name})

    def _on_item_changed(self, item, column: int) -> None:
        if not self._updating and column == 0:
            self.visibility_changed.emit(self.hidden())


class NicheWidget(QWidget):
    """Niche clustering of chosen cell types (see the module docstring)."""

    computed = Signal(object)
    """Emitted with the :class:`~napari_cellama.core.niche.NicheResult` once it is shown."""

    def __init__(self, napari_viewer):
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        from ..session import get_session

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.annotation = None
        self.result = None
        self.clusters: pd.Series | None = None
        """Niche cluster of every clustered cell (index: cell id), of the result or a restored session."""
        self.colors: dict = {}
        self.heatmap_data: pd.DataFrame | None = None
        """The cluster x neighbour type fractions drawn in the heatmap (rows in drawing order)."""
        self.layer = None
        self._heat_ax = None

        self.status = QLabel()
        self.status.setWordWrap(True)

        # ---------------------------------------------------------------- parameters
        params = QGroupBox("Parameters")
        form = QFormLayout(params)
        self.types_list = QListWidget()
        self.types_list.setSelectionMode(QAbstractItemView.MultiSelection)
        self.types_list.setMaximumHeight(120)
        self.types_list.setToolTip("the cell types to split by niche (current labels of the transfer; "
                                   "every labelled cell still counts as a neighbour)")
        self.neighbourhood_combo = QComboBox()
        for text, key in NEIGHBOURHOODS:
            self.neighbourhood_combo.addItem(text, key)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 100)
        self.k_spin.setValue(DEFAULT_SPATIAL_NEIGHBORS)
        self.k_spin.setToolTip("spatial neighbours (nearest first) named in each niche sentence")
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(1.0, 1000.0)
        self.radius_spin.setDecimals(1)
        self.radius_spin.setSuffix(" µm")
        self.radius_spin.setValue(DEFAULT_NICHE_RADIUS)
        self.radius_spin.setToolTip("every cell whose centroid is this close; a large radius makes long "
                                    "sentences that the model cuts (the farthest neighbours are lost)")
        self.neighbourhood_stack = QStackedWidget()
        self.neighbourhood_stack.addWidget(self.k_spin)
        self.neighbourhood_stack.addWidget(self.radius_spin)
        self.neighbourhood_combo.currentIndexChanged.connect(self.neighbourhood_stack.setCurrentIndex)
        nb_row = QHBoxLayout()
        nb_row.addWidget(self.neighbourhood_combo, 1)
        nb_row.addWidget(self.neighbourhood_stack)
        self.mode_combo = QComboBox()
        for text, key in SENTENCE_MODES:
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip("genes + niche: 'Top genes are ... . Nearest cells are A, B, ...'\n"
                                   "niche only: 'Nearest cells are A, B, ...'")
        self.method_combo = QComboBox()
        for text, key in METHODS:
            self.method_combo.addItem(text, key)
        self.resolution_spin = QDoubleSpinBox()
        self.resolution_spin.setRange(0.01, 10.0)
        self.resolution_spin.setSingleStep(0.05)
        self.resolution_spin.setDecimals(2)
        self.resolution_spin.setValue(DEFAULT_NICHE_WIDGET_RESOLUTION)
        self.resolution_spin.setToolTip(RESOLUTION_TIP)
        self.n_clusters_spin = QSpinBox()
        self.n_clusters_spin.setRange(2, 100)
        self.n_clusters_spin.setValue(DEFAULT_NICHE_WIDGET_CLUSTERS)
        self.n_clusters_spin.setToolTip("KMeans: the number of niches expected")
        self.method_stack = QStackedWidget()
        self.method_stack.addWidget(self.resolution_spin)
        self.method_stack.addWidget(self.n_clusters_spin)
        self.method_combo.currentIndexChanged.connect(self.method_stack.setCurrentIndex)
        self.method_combo.setToolTip(RESOLUTION_TIP)
        method_row = QHBoxLayout()
        method_row.addWidget(self.method_combo, 1)
        method_row.addWidget(self.method_stack)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default: offline all-MiniLM-L6-v2")
        self.model_edit.setToolTip("a sentence-transformers model name or local folder (e.g. a fine-tuned one)")
        self.embed_mode_combo = QComboBox()
        self.embed_mode_combo.addItems(list(EMBED_MODES))
        self.embed_mode_combo.setCurrentText(DEFAULT_EMBED_MODE)
        self.embed_mode_combo.setToolTip("how sentences are embedded (as in the transfer widget)")
        self.cache_check = QCheckBox("cache embeddings on disk (re-runs are fast)")
        self.cache_check.setChecked(True)
        form.addRow("cell types", self.types_list)
        form.addRow("neighbourhood", nb_row)
        form.addRow("sentence", self.mode_combo)
        form.addRow("method", method_row)
        form.addRow("model", self.model_edit)
        form.addRow("embedding", self.embed_mode_combo)
        form.addRow("", self.cache_check)
        self.run_button = QPushButton("Run niche clustering")
        self.run_button.clicked.connect(lambda: self.run())
        self.recluster_button = QPushButton("Re-cluster")
        self.recluster_button.setToolTip("cluster the same niche embeddings again with the method and value "
                                         "above (no re-embedding: takes seconds)")
        self.recluster_button.clicked.connect(lambda: self.recluster())
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button, 1)
        run_row.addWidget(self.recluster_button)
        self.runner = JobRunner(self)

        # ---------------------------------------------------------------- results
        self.results_box = QGroupBox("Niches")
        rl = QVBoxLayout(self.results_box)
        self.legend = NicheLegend()
        self.legend.visibility_changed.connect(self._on_visibility)
        self.legend.cluster_clicked.connect(self.select_cluster)
        self.figure = Figure(figsize=(4, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(300)
        self.canvas.mpl_connect("button_press_event", self._on_heatmap_click)
        self.markers_table = QTableWidget(0, len(MARKER_TABLE_COLUMNS))
        self.markers_table.setHorizontalHeaderLabels([label for _c, label in MARKER_TABLE_COLUMNS])
        self.markers_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.markers_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.markers_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.markers_table.verticalHeader().setVisible(False)
        self.markers_table.verticalHeader().setDefaultSectionSize(22)
        self.markers_table.setMinimumHeight(160)
        self.markers_table.cellClicked.connect(self._on_marker_clicked)
        heat_page = QWidget()
        hl = QVBoxLayout(heat_page)
        hl.addWidget(QLabel("Mean fraction of each cell type among the niche's cells' neighbours; "
                            "click a row to highlight the niche."))
        hl.addWidget(self.canvas, 1)
        marker_page = QWidget()
        ml = QVBoxLayout(marker_page)
        ml.addWidget(QLabel("Top marker genes of each niche against the other niches (Wilcoxon); "
                            "click a row to highlight the niche."))
        ml.addWidget(self.markers_table, 1)
        for page in (heat_page, marker_page):
            page.layout().setContentsMargins(2, 2, 2, 2)
            page.layout().itemAt(0).widget().setWordWrap(True)
        self.tabs = QTabWidget()
        self.tabs.addTab(heat_page, "Composition")
        self.tabs.addTab(marker_page, "Marker genes")
        rl.addWidget(self.legend)
        rl.addWidget(self.tabs, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(params)
        layout.addLayout(run_row)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.results_box, 1)

        self.session.changed.connect(self._on_session_changed)
        self._on_session_changed("init")
        self._draw_heatmap()

    # ------------------------------------------------------------------ session / labels
    def _on_session_changed(self, what: str) -> None:
        if what not in ("init", "loaded", "cleared", "transfer"):
            return
        info = self.session.results.get("transfer") or {}
        annotation = info.get("annotation")
        if annotation is not self.annotation:
            if self.annotation is not None:
                self.annotation.disconnect(self._on_annotation)
            self.annotation = annotation
            if annotation is not None:
                annotation.connect(self._on_annotation)
            self._clear_results()
            if annotation is not None and annotation.niche_cluster is not None:
                self._show_restored(annotation.niche_cluster)
        self._fill_types()
        self._update_enabled()

    def _on_annotation(self, what: str) -> None:
        if what in ("threshold", "edit", "undo", "redo", "types"):
            self._fill_types()

    def type_counts(self) -> pd.Series:
        """Cells per current label (``Unassigned`` left out): the types that can be clustered."""
        if self.annotation is None:
            return pd.Series(dtype="int64")
        counts = self.annotation.counts()
        return counts[counts.index.astype(str) != UNASSIGNED]

    def _fill_types(self) -> None:
        chosen = set(self.selected_types())
        self.types_list.clear()
        for name, n in self.type_counts().items():
            item = QListWidgetItem(f"{name} ({int(n):,})")
            item.setData(Qt.UserRole, str(name))
            self.types_list.addItem(item)
            item.setSelected(str(name) in chosen)

    def selected_types(self) -> list[str]:
        return [self.types_list.item(i).data(Qt.UserRole) for i in range(self.types_list.count())
                if self.types_list.item(i).isSelected()]

    def set_cell_types(self, names) -> None:
        """Select exactly these cell types in the list (as clicking them does)."""
        wanted = {str(n) for n in ([names] if isinstance(names, str) else names)}
        for i in range(self.types_list.count()):
            item = self.types_list.item(i)
            item.setSelected(item.data(Qt.UserRole) in wanted)

    def _update_enabled(self) -> None:
        ready = self.annotation is not None and self.session.query is not None
        self.run_button.setEnabled(ready)
        self.recluster_button.setEnabled(ready and self.result is not None)
        self.results_box.setEnabled(self.clusters is not None)
        if not ready:
            self.status.setText("Run a transfer in “2. Transfer, review and export” first: niches are "
                                "built from its current labels.")
        elif self.clusters is None:
            self.status.setText(f"{self.annotation.n_cells:,} labelled cells: choose cell types and Run.")

    def parameters(self) -> dict:
        by_radius = self.neighbourhood_combo.currentData() == "radius"
        leiden = self.method_combo.currentData() == NICHE_METHOD_LEIDEN
        return {
            "cell_types": self.selected_types(),
            "k": None if by_radius else int(self.k_spin.value()),
            "radius": float(self.radius_spin.value()) if by_radius else None,
            "mode": self.mode_combo.currentData(),
            "resolution": float(self.resolution_spin.value()) if leiden else None,
            "n_clusters": None if leiden else int(self.n_clusters_spin.value()),
            "model": self.model_edit.text().strip() or None,
            "device": "auto",
            "embed_mode": self.embed_mode_combo.currentText(),
            "cache": self.cache_check.isChecked(),
        }

    def set_method(self, method: str, value) -> None:
        """Choose Leiden (``value`` = resolution) or KMeans (``value`` = number of clusters)."""
        self.method_combo.setCurrentIndex([key for _t, key in METHODS].index(method))
        if method == NICHE_METHOD_LEIDEN:
            self.resolution_spin.setValue(float(value))
        else:
            self.n_clusters_spin.setValue(int(value))

    # ------------------------------------------------------------------ run
    def run(self, sync: bool = False):
        """Start niche clustering (in a worker; ``sync=True`` runs it here, for tests and scripts)."""
        if self.annotation is None or self.session.query is None:
            self.runner._fail("run a transfer first (widget 2): niches are built from its labels")
            return None
        p = self.parameters()
        if not p["cell_types"]:
            self.runner._fail("choose at least one cell type to cluster by niche")
            return None
        labels = self.annotation.cell_type.astype(str)
        args = (self.session.query, labels, p["cell_types"], p["k"], p["radius"], p["mode"], p["resolution"],
                p["n_clusters"], p["model"], p["device"], p["cache"], p["embed_mode"])
        if sync:
            return self.runner.run_sync(niche_job, *args, on_done=self._on_result)
        return self.runner.start(niche_job, *args, on_done=self._on_result, what="niche clustering")

    def recluster(self, sync: bool = False):
        """Cluster the last run's embeddings again with the current method (no re-embedding)."""
        if self.result is None:
            self.runner._fail("run niche clustering first; re-clustering reuses its embeddings")
            return None
        p = self.parameters()
        args = (self.result, self.session.query, p["resolution"], p["n_clusters"])
        if sync:
            return self.runner.run_sync(recluster_job, *args, on_done=self._on_result)
        return self.runner.start(recluster_job, *args, on_done=self._on_result, what="re-clustering")

    def _on_result(self, result) -> None:
        from ..layers import add_cell_features

        if self.annotation is None:  # the transfer was replaced while this ran
            self.runner._fail("the transfer changed while niches were computed; run again")
            return
        self.result = result
        self.annotation.set_niche_clusters(result.clusters)
        self._show_clusters(result.clusters)
        cells = self._cells()
        add_cell_features(cells, result.clusters_for(cells.features[CELL_ID]).astype(object).rename(NICHE_CLUSTER))
        p = result.params
        how = (f"Leiden {p['resolution']:g}" if p.get("method") == NICHE_METHOD_LEIDEN
               else f"KMeans {p.get('n_clusters')}")
        where = f"k = {p['k']}" if p.get("k") else f"radius {p.get('radius'):g} µm"
        note = (f"{len(result.table):,} cells of {', '.join(p.get('cell_types', []))}: "
                f"{len(result.sizes)} niches ({how}; {where}; {p.get('mode')}).")
        if p.get("n_truncated"):
            note += (f" {p['n_truncated']} sentences were longer than the model's {p.get('max_seq_length')} "
                     "word pieces and lost their farthest neighbours: use fewer neighbours or a smaller radius.")
        self.status.setText(note)
        self.session.results["niche"] = {"result": result, "annotation": self.annotation,
                                         "clusters": self.clusters, "colors": dict(self.colors),
                                         "select_cluster": self.select_cluster}
        self._update_enabled()
        self.session.changed.emit("niche")
        self.computed.emit(result)

    def _show_restored(self, niche_cluster: pd.Series) -> None:
        clusters = niche_cluster.dropna().astype(str)
        if not len(clusters):
            return
        self._show_clusters(clusters)
        self.status.setText(f"restored {len(clusters):,} cells in {clusters.nunique()} niches from the saved "
                            "session; composition and marker genes are not saved with it: Run to see them.")
        self.session.results["niche"] = {"result": None, "annotation": self.annotation,
                                         "clusters": self.clusters, "colors": dict(self.colors),
                                         "select_cluster": self.select_cluster}

    def _clear_results(self) -> None:
        self.result = None
        self.clusters = None
        self.colors = {}
        self.heatmap_data = None
        self._remove_layer()
        self.legend.set_clusters([], {}, {})
        self.markers_table.setRowCount(0)
        self.session.results.pop("niche", None)
        if hasattr(self, "figure"):
            self._draw_heatmap()

    # ------------------------------------------------------------------ display
    def _cells(self):
        from ..layers import find_layers

        name = self.session.layer_names.get("cells")
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        found = find_layers(self.viewer.layers, KIND_CELLS)
        if not found:
            raise CellamaInputError("no cells layer: open the Xenium run first")
        return found[0]

    def niche_layer(self):
        """The niche layer shown by this widget (None once removed)."""
        from ..layers import layer_info

        for layer in self.viewer.layers:
            if layer_info(layer).get("niche"):
                return layer
        return None

    def _remove_layer(self) -> None:
        layer = self.niche_layer()
        if layer is not None:
            self.viewer.layers.remove(layer)
        self.layer = None

    def _show_clusters(self, clusters: pd.Series) -> None:
        """Layer, legend, heatmap and marker table of ``clusters`` (Series by cell id)."""
        from .. import layers as L

        clusters = clusters.dropna().astype(str)
        clusters.index = clusters.index.astype(str)
        self.clusters = clusters
        names = _natural(clusters.unique())
        self.colors = L.niche_colors(names)
        cells = self._cells()
        self._remove_layer()
        from napari.layers import Layer

        # (napari hands plugins a proxy of the viewer: compare layers by metadata, not identity)
        layer = self.viewer.add_layer(Layer.create(*L.niche_layer_data(cells, clusters.index, clusters.to_numpy(),
                                                                       colors=self.colors)))
        self.layer = layer
        # the transfer's maps would show through the grey of the other cells: hide them
        for other in L.find_layers(self.viewer.layers, KIND_CELL_CATEGORIES) + L.find_layers(
                self.viewer.layers, KIND_CELL_VALUES):
            if not L.layer_info(other).get("niche"):
                other.visible = False
        # under the selection outlines, and the cells layer on top and active (hover)
        sel = [i for i, lay in enumerate(self.viewer.layers) if L.layer_kind(lay) == "selection"]
        if sel:
            self.viewer.layers.move(self.viewer.layers.index(layer), sel[0])
        self.viewer.layers.move(self.viewer.layers.index(cells), len(self.viewer.layers))
        self.viewer.layers.selection.active = cells
        counts = clusters.value_counts()
        markers = self.result.top_markers(3) if self.result is not None else {}
        self.legend.set_clusters(names, counts, self.colors, markers)
        self._draw_heatmap()
        self._fill_markers()
        self._update_enabled()

    def _on_visibility(self, hidden) -> None:
        from ..layers import set_niche_hidden

        layer = self.niche_layer()
        if layer is not None:
            set_niche_hidden(layer, hidden)

    def _draw_heatmap(self) -> None:
        from ..core.annotation import to_hex

        self.figure.clear()
        ax = self.figure.add_subplot(111)
        self._heat_ax = None
        self.heatmap_data = None
        r = self.result
        if r is None or not len(r.composition):
            msg = ("no niches yet" if self.clusters is None
                   else "composition is not saved with a session:\nRun to see it")
            ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=9)
            ax.set_axis_off()
            self.canvas.draw_idle()
            return
        comp = r.composition.copy()
        comp.index = comp.index.astype(str)
        comp = comp.loc[_natural(comp.index)]
        comp = comp.loc[:, (comp > 0).any(axis=0)]
        self.heatmap_data = comp
        im = ax.imshow(comp.to_numpy(), aspect="auto", cmap="Greens", vmin=0.0, vmax=max(0.5, float(comp.max().max())))
        sizes = r.sizes.copy()
        sizes.index = sizes.index.astype(str)
        ax.set_yticks(range(len(comp.index)), [f"■ niche {c} ({int(sizes.get(c, 0))})" for c in comp.index],
                      fontsize=7)
        for label, c in zip(ax.get_yticklabels(), comp.index):
            label.set_color(to_hex(self.colors.get(c, (0, 0, 0, 1))))
            label.set_fontweight("bold")
        ax.set_xticks(range(len(comp.columns)), [str(t) for t in comp.columns], fontsize=6, rotation=60,
                      ha="right")
        values = comp.to_numpy()
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if values[i, j] >= 0.05:
                    ax.text(j, i, f"{values[i, j]:.0%}", ha="center", va="center", fontsize=5.5,
                            color="white" if values[i, j] > 0.35 else "black")
        ax.set_xlabel("neighbour cell type", fontsize=7)
        ax.set_title(f"neighbours of the {', '.join(r.params.get('cell_types', []))} niches", fontsize=8)
        self.figure.colorbar(im, ax=ax, fraction=0.04)
        self._heat_ax = ax
        self.canvas.draw_idle()

    def _fill_markers(self) -> None:
        table = self.markers_table
        table.setRowCount(0)
        r = self.result
        if r is None or r.markers is None or not len(r.markers):
            return
        m = r.markers.copy()
        m[NICHE_CLUSTER] = m[NICHE_CLUSTER].astype(str)
        order = {c: i for i, c in enumerate(_natural(m[NICHE_CLUSTER].unique()))}
        m = m.iloc[np.argsort(m[NICHE_CLUSTER].map(order).to_numpy(), kind="stable")]
        table.setRowCount(len(m))
        for row, (_i, rec) in enumerate(m.iterrows()):
            for col, (key, _label) in enumerate(MARKER_TABLE_COLUMNS):
                value = rec.get(key)
                if key == NICHE_CLUSTER:
                    item = QTableWidgetItem(str(value))
                    item.setIcon(_swatch(self.colors.get(str(value), (0.5, 0.5, 0.5, 1))))
                    item.setData(Qt.UserRole, str(value))
                elif key == GENE:
                    item = QTableWidgetItem(str(value))
                elif key in (MARKER_PCT_IN, MARKER_PCT_REST):
                    item = QTableWidgetItem("" if pd.isna(value) else f"{float(value):.0%}")
                elif key == MARKER_PVAL_ADJ:
                    item = QTableWidgetItem("" if pd.isna(value) else f"{float(value):.2g}")
                else:
                    item = QTableWidgetItem("" if pd.isna(value) else f"{float(value):.2f}")
                table.setItem(row, col, item)
        table.resizeColumnsToContents()

    # ------------------------------------------------------------------ highlight
    def cells_of(self, cluster: str) -> pd.Index:
        """Cell ids of one niche cluster."""
        if self.clusters is None:
            return pd.Index([], dtype=object, name=CELL_ID)
        return self.clusters.index[self.clusters.to_numpy() == str(cluster)]

    def select_cluster(self, cluster: str) -> pd.Index:
        """Highlight the cells of a niche cluster on the tissue (the transfer widget's selection)."""
        ids = self.cells_of(cluster)
        select = (self.session.results.get("transfer") or {}).get("select_cells")
        if select is None:
            self.runner._fail("no transfer widget to show the selection; open “2. Transfer, review and export”")
            return ids
        select(ids)
        self.legend.select(str(cluster))
        return ids

    def _on_heatmap_click(self, event) -> None:
        if self._heat_ax is None or event.inaxes is not self._heat_ax or event.ydata is None:
            return
        row = round(event.ydata)
        if self.heatmap_data is not None and 0 <= row < len(self.heatmap_data.index):
            self.select_cluster(self.heatmap_data.index[row])

    def _on_marker_clicked(self, row: int, _col: int) -> None:
        item = self.markers_table.item(row, 0)
        if item is not None:
            self.select_cluster(item.data(Qt.UserRole))
