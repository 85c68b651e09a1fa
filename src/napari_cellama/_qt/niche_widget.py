"""Dock widget "3. Niche clusters": split chosen cell types by what surrounds them.

Reads the current labels of the session's transfer (``session.annotation``, threshold and
manual edits applied; made by "2. Transfer, review and export", an opened session or the
API: this dock does not need the transfer dock) and runs
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
* a legend (:class:`~napari_cellama._qt.legend.CategoryLegend`): one row per cluster (tick to
  show / hide it, click to highlight its cells: they become the session's selection, outlined
  in ``selected cells`` and ready for "Assign to selected"); its cell count and top markers;
* a heatmap of cluster x neighbour cell type composition (mean fraction of each type among
  the cluster's cells' spatial neighbours; rows sum to 1); clicking a row highlights the
  cluster's cells;
* a table of the marker genes of every cluster (Wilcoxon against the other clusters);
  clicking a row highlights that cluster's cells.

Each cell's cluster is stored with :meth:`~napari_cellama.core.Annotation.set_niche_clusters`
(so a saved session and every export carry a ``niche_cluster`` column) and in the cells
layer's ``features`` (shown on hover). The result is also the session's ``niche`` field
(:class:`~napari_cellama.session.NicheState`, signal ``session.events.niche``). A restored
session shows its saved clusters (layer, legend, highlight); composition and markers are
not saved with it, so they appear after a new Run. Heatmap and marker table are drawn by
:mod:`.niche_views`.
"""

from __future__ import annotations

import pandas as pd
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .._constants import (
    CELL_ID,
    KIND_CELL_CATEGORIES,
    KIND_CELL_VALUES,
    NICHE_CLUSTER,
    NICHE_METHOD_LEIDEN,
)
from ..validators import CellamaInputError
from ._dock import SessionDock
from ._runner import JobRunner
from ._wiring import rewire
from .legend import CategoryLegend
from .niche_form import METHODS, NicheFormMixin  # noqa: F401 (METHODS: public name)
from .niche_views import MARKER_TABLE_COLUMNS, draw_composition, fill_marker_table, natural
from .selection_view import SelectionView, cells_layer


def niche_job(query, labels, cell_types, k, radius, mode, resolution, n_clusters, model, device, cache,
              embed_mode=None):
    """The engine generator run by the widget (a plain function, testable without Qt)."""
    from ..core.embedding_options import make_embedder
    from ..core.niche import iter_niches
    from ..core.options import NicheOptions

    embedder = make_embedder(model=model or None, device=device, mode=embed_mode, cache=cache or None)
    options = NicheOptions.from_flags(k=k, radius=radius, mode=mode, resolution=resolution, n_clusters=n_clusters)
    result = yield from iter_niches(query, labels, cell_types, options=options, embedder=embedder)
    return result


def recluster_job(result, query, resolution, n_clusters):
    """Re-cluster the embeddings of ``result`` (generator; no re-embedding)."""
    from ..core.niche import iter_recluster

    out = yield from iter_recluster(result, query, resolution=resolution, n_clusters=n_clusters)
    return out


class NicheWidget(NicheFormMixin, SessionDock):
    """Niche clustering of chosen cell types (see the module docstring)."""

    computed = Signal(object)
    """Emitted with the :class:`~napari_cellama.core.niche.NicheResult` once it is shown."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.annotation = None
        self.result = None
        self.clusters: pd.Series | None = None
        """Niche cluster of every clustered cell (index: cell id), of the result or a restored session."""
        self.colors: dict = {}
        self.heatmap_data: pd.DataFrame | None = None
        """The cluster x neighbour type fractions drawn in the heatmap (rows in drawing order)."""
        self.layer = None
        self._heat_ax = None
        self.selection_view = SelectionView(napari_viewer, self.session)

        self.status = QLabel()
        self.status.setWordWrap(True)

        params = self._build_params_box()
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
        self.track_jobs(self.runner)  # session.running: the load dock waits for it

        # ---------------------------------------------------------------- results
        self.results_box = QGroupBox("Niches")
        rl = QVBoxLayout(self.results_box)
        self.legend = CategoryLegend("Niches (tick to show, click to highlight their cells)",
                                     ("niche", "cells", "top markers"), label=lambda name: f"niche {name}")
        self.legend.tree.setMinimumHeight(110)
        self.legend.tree.setMaximumHeight(180)
        self.legend.visibility_changed.connect(self._on_visibility)
        self.legend.row_clicked.connect(self.select_cluster)
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

        self.session.events.inputs.connect(self._on_session_changed)
        self.session.events.transfer.connect(self._on_session_changed)
        self._on_session_changed()
        self._draw_heatmap()

    def release(self) -> None:
        """A closed dock lets go of the session (its job has ended): its layer stays."""
        self.session.events.inputs.disconnect(self._on_session_changed)
        self.session.events.transfer.disconnect(self._on_session_changed)
        rewire(self.annotation, None, {"labels_changed": self._fill_types, "types_changed": self._fill_types})
        self.annotation = None

    # ------------------------------------------------------------------ session / labels
    def _on_session_changed(self, *_value) -> None:
        annotation = self.session.annotation
        if annotation is not self.annotation:
            rewire(self.annotation, annotation, {"labels_changed": self._fill_types,
                                                 "types_changed": self._fill_types})
            self.annotation = annotation
            self._clear_results()
            if annotation is not None and annotation.niche_cluster is not None:
                self._show_restored(annotation.niche_cluster)
        self._fill_types()
        self._update_enabled()

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

    # ------------------------------------------------------------------ run
    def run(self, sync: bool = False):
        """Start niche clustering (in a worker; ``sync=True`` runs it here, for tests and scripts)."""
        if self.annotation is None or self.session.query is None:
            self.runner.fail("run a transfer first (widget 2): niches are built from its labels")
            return None
        p = self.parameters()
        if not p["cell_types"]:
            self.runner.fail("choose at least one cell type to cluster by niche")
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
            self.runner.fail("run niche clustering first; re-clustering reuses its embeddings")
            return None
        p = self.parameters()
        args = (self.result, self.session.query, p["resolution"], p["n_clusters"])
        if sync:
            return self.runner.run_sync(recluster_job, *args, on_done=self._on_result)
        return self.runner.start(recluster_job, *args, on_done=self._on_result, what="re-clustering")

    def _on_result(self, result) -> None:
        from ..layers import add_cell_features
        from ..session import NicheState

        if self.annotation is None:  # the transfer was replaced while this ran
            self.runner.fail("the transfer changed while niches were computed; run again")
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
        self._update_enabled()
        self.session.niche = NicheState(result, self.clusters, dict(self.colors))
        self.computed.emit(result)

    def _show_restored(self, niche_cluster: pd.Series) -> None:
        from ..session import NicheState

        clusters = niche_cluster.dropna().astype(str)
        if not len(clusters):
            return
        self._show_clusters(clusters)
        self.status.setText(f"restored {len(clusters):,} cells in {clusters.nunique()} niches from the saved "
                            "session; composition and marker genes are not saved with it: Run to see them.")
        self.session.niche = NicheState(None, self.clusters, dict(self.colors))

    def _clear_results(self) -> None:
        self.result = None
        self.clusters = None
        self.colors = {}
        self.heatmap_data = None
        self._remove_layer()
        self.legend.set_rows([], {}, {})
        self.markers_table.setRowCount(0)
        if self.session.niche is not None:
            self.session.niche = None
        if hasattr(self, "figure"):
            self._draw_heatmap()

    # ------------------------------------------------------------------ display
    def _cells(self):
        cells = cells_layer(self.viewer, self.session)
        if cells is None:
            raise CellamaInputError("no cells layer: open the Xenium run first")
        return cells

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
        from ..core.palette import niche_colors

        clusters = clusters.dropna().astype(str)
        clusters.index = clusters.index.astype(str)
        self.clusters = clusters
        names = natural(clusters.unique())
        self.colors = niche_colors(names)
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
        self.viewer.layers.move(self.viewer.layers.index(cells), len(self.viewer.layers))
        outlines = self.selection_view.layer()
        if outlines is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(outlines))
        self.viewer.layers.selection.active = cells
        counts = clusters.value_counts()
        markers = self.result.top_markers(3) if self.result is not None else {}
        self.legend.set_rows(names, counts, self.colors, {n: ", ".join(markers.get(n, [])[:3]) for n in names})
        self._draw_heatmap()
        self._fill_markers()
        self._update_enabled()

    def _on_visibility(self, hidden) -> None:
        from ..layers import set_niche_hidden

        layer = self.niche_layer()
        if layer is not None:
            set_niche_hidden(layer, hidden)

    def _draw_heatmap(self) -> None:
        empty = "no niches yet" if self.clusters is None else "composition is not saved with a session:\nRun to see it"
        self.heatmap_data, self._heat_ax = draw_composition(self.figure, self.result, self.colors, empty)
        self.canvas.draw_idle()

    def _fill_markers(self) -> None:
        fill_marker_table(self.markers_table, self.result, self.colors)

    # ------------------------------------------------------------------ highlight
    def cells_of(self, cluster: str) -> pd.Index:
        """Cell ids of one niche cluster."""
        if self.clusters is None:
            return pd.Index([], dtype=object, name=CELL_ID)
        return self.clusters.index[self.clusters.to_numpy() == str(cluster)]

    def select_cluster(self, cluster: str) -> pd.Index:
        """Highlight the cells of a niche cluster on the tissue (they become the session's selection)."""
        ids = self.cells_of(cluster)
        self.session.selection.select(ids)
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
