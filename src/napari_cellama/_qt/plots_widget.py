"""Dock widget "Plots": matplotlib views of the current annotation.

* **UMAP** of query and reference embeddings, computed once per result off the GUI thread
  through the dock's JobRunner (:mod:`napari_cellama.core.embedding_map`: fitted on at most
  5,000 cells, every other query cell placed by its nearest fitted neighbours; the title says
  so) and kept for that result (another annotation of the same run, e.g. transfer +
  prototypes, reuses it); coloured by type or by dataset; clicking a query point selects
  that cell on the tissue (it becomes the session's selection, outlined whichever docks are
  open).
* **Composition**: cells per type, with the types' legend colours.
* **Contingency**: share of each transferred type in the values of another categorical
  column (a query ``obs`` column, or the Xenium run's own graph clusters from ``analysis/``).
* **Marker dotplot**: the reference's top markers per type over the query cells grouped by
  label (:class:`~.dotplot_view.DotplotView`, the same widget and clicks as the Review dock's:
  click a type to select its cells on the tissue, a gene to add its expression as a layer);
  its markers are computed once per result off the GUI thread
  (:func:`~.review_jobs.prepare_dotplot`, shared with the Review dock).

Switching views or colourings only redraws; nothing is recomputed but the UMAP, once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
)

from .._constants import CELL_TYPE
from ._dock import SessionDock
from ._runner import JobRunner
from ._wiring import rewire
from .dotplot_view import DotplotMixin, DotplotView
from .selection_view import SelectionView

DOTPLOT = "marker dotplot"
VIEWS = ("UMAP", "composition", "contingency", DOTPLOT)
XENIUM_CLUSTERS = "Xenium graph clusters"


class PlotsWidget(DotplotMixin, SessionDock):
    """Plots of the session's annotation (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.annotation = None
        self.result = None
        self.map: pd.DataFrame | None = None
        self.map_note = ""
        self._map_for = None
        self.n_computed = 0
        """UMAPs this dock computed (a cached one is not counted)."""
        self.data = None
        """Markers and dotplot of the shown result (:class:`~.review_jobs.ReviewData`, no evidence)."""
        self._data_for = None
        self._dotplot_dirty = True

        self.view_combo = QComboBox()
        self.view_combo.addItems(list(VIEWS))
        self.view_combo.currentTextChanged.connect(lambda _t: self.draw())
        self.color_combo = QComboBox()
        self.color_combo.addItems(["type", "dataset"])
        self.color_combo.currentTextChanged.connect(lambda _t: self.draw())
        self.other_combo = QComboBox()
        self.other_combo.currentTextChanged.connect(lambda _t: self.draw())
        self.umap_button = QPushButton("Compute UMAP")
        self.umap_button.clicked.connect(lambda: self.compute_map())
        self.runner = JobRunner(self)
        self.info = QLabel("Run a transfer to see plots.")
        self.info.setWordWrap(True)
        self.figure = Figure(figsize=(4, 4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(320)
        self.canvas.mpl_connect("pick_event", self._on_pick)

        row = QHBoxLayout()
        row.addWidget(self.view_combo)
        self.color_label = QLabel("colour")
        row.addWidget(self.color_label)
        row.addWidget(self.color_combo)
        row2 = QHBoxLayout()
        self.other_label = QLabel("compare with")
        row2.addWidget(self.other_label)
        row2.addWidget(self.other_combo, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(row2)
        layout.addWidget(self.umap_button)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.info)
        self.dotplot = DotplotView()
        self.dotplot.group_clicked.connect(self.select_label)
        self.dotplot.gene_clicked.connect(self.show_gene)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.canvas)
        self.stack.addWidget(self.dotplot)
        layout.addWidget(self.stack, 1)
        # vertically expanding: napari then gives the dock's height to the figure instead of
        # adding a stretch below a 320-pixel plot
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.selection_view = SelectionView(napari_viewer, self.session)
        self.session.events.transfer.connect(self._on_transfer)
        self.session.events.niche.connect(self._on_niche)
        from ..review_focus import reference_focus  # the review dock's "show neighbours on UMAP"

        reference_focus(self.session).changed.connect(self._on_reference_focus)
        self._on_transfer(self.session.transfer)

    # ------------------------------------------------------------------ data
    def _on_niche(self, _state) -> None:
        if self.annotation is not None:
            self._fill_other_columns()  # niche_cluster becomes a column to compare with
            self.draw()

    def _on_transfer(self, state) -> None:
        if state is None:
            return
        rewire(self.annotation, state.annotation, {"labels_changed": self._redraw, "types_changed": self._redraw,
                                                   "colors_changed": self._redraw})
        self.annotation = state.annotation
        self.result = state.result
        self.data, self._data_for = None, None
        self.map = None
        self._use_cached_map()
        self._fill_other_columns()
        self.info.setText(f"{self.annotation.n_cells:,} cells. Click a point in the UMAP to select its cell.")
        self.draw()

    def _redraw(self, *_cause) -> None:
        self.draw()

    def _on_reference_focus(self, rows, title: str) -> None:
        """Highlight reference cells (rows of the reference embeddings) on the UMAP."""
        self.focus_rows, self.focus_title = rows, title
        if rows is not None and (self.map is None or self._map_for is not self.result) and not self.runner.busy:
            self.compute_map()
        self.view_combo.setCurrentText("UMAP")
        self.draw()

    def other_columns(self) -> dict:
        """``{name: Series by cell_id}`` of categorical columns to compare with."""
        from ..core.summaries import categorical_columns
        from ..io.xenium import read_xenium_clusters

        out = {}
        root = self.session.xenium_root
        if root is not None:
            clusters = read_xenium_clusters(root)
            if clusters is not None:
                out[XENIUM_CLUSTERS] = clusters
        q = self.session.query
        if q is not None:
            for col in categorical_columns(q.obs):
                out[col] = q.obs[col].astype(str)
        if self.annotation is not None and self.annotation.niche_cluster is not None:
            out["niche_cluster"] = self.annotation.niche_cluster.astype(str)
        return out

    def _fill_other_columns(self) -> None:
        self._others = self.other_columns()
        self.other_combo.blockSignals(True)
        self.other_combo.clear()
        self.other_combo.addItems(list(self._others))
        self.other_combo.blockSignals(False)

    def _use_cached_map(self) -> bool:
        from ..core.embedding_map import cached_map

        emap = None if self.result is None else cached_map(self.result)
        if emap is None:
            return False
        self.map, self.map_note, self._map_for = emap.coords, emap.note, self.result
        return True

    def compute_map(self, sync: bool = False):
        """Compute the UMAP of the current result's embeddings, once per result (a map kept for
        this result is drawn at once); returns the worker, or None when nothing had to run."""
        from ..core.embedding_map import iter_embedding_map_of

        r = self.result
        if r is None or getattr(r, "query_embeddings", None) is None:
            self.runner.fail("no embeddings: run a transfer first")
            return None
        if self._use_cached_map():
            self.view_combo.setCurrentText("UMAP")
            self.draw()
            return None
        if self.runner.busy:
            return None
        args = (r.query_embeddings, getattr(r, "reference_embeddings", None))
        done = lambda emap, r=r: self._on_map(emap, r)  # noqa: E731 - the result the map belongs to
        if sync:
            return self.runner.run_sync(iter_embedding_map_of, *args, on_done=done)
        return self.runner.start(iter_embedding_map_of, *args, on_done=done, what="UMAP")

    def _on_map(self, emap, result=None) -> None:
        from ..core.embedding_map import store_map

        result = self.result if result is None else result
        store_map(result, emap)
        self.n_computed += 1
        if result is not self.result:  # another run is shown meanwhile: keep the map for later
            return
        self.map, self.map_note, self._map_for = emap.coords, emap.note, result
        self.view_combo.setCurrentText("UMAP")
        self.draw()

    # ------------------------------------------------------------------ drawing
    def draw(self) -> None:
        view = self.view_combo.currentText()
        self.stack.setCurrentWidget(self.dotplot if view == DOTPLOT else self.canvas)
        for widget, shown in ((self.color_combo, view == "UMAP"), (self.color_label, view == "UMAP"),
                              (self.umap_button, view == "UMAP"), (self.other_combo, view == "contingency"),
                              (self.other_label, view == "contingency"), (self.info, view == "UMAP")):
            widget.setVisible(shown)  # only the controls of the shown view
        if view == DOTPLOT:
            self._draw_marker_dotplot()
            return
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        if self.annotation is None:
            ax.text(0.5, 0.5, "no annotation yet", ha="center", va="center")
            ax.set_axis_off()
        elif view == "UMAP":
            self._draw_umap(ax)
        elif view == "composition":
            self._draw_composition(ax)
        else:
            self._draw_contingency(ax)
        self.canvas.draw_idle()

    def _draw_marker_dotplot(self) -> None:
        if self.annotation is not None and self._data_for is not self.annotation:
            self.prepare_dotplot()  # draws when ready
        self.draw_dotplot()

    def prepare_dotplot(self, sync: bool = False):
        """Compute the reference markers and their expression over the query (off the GUI
        thread; at once when the Review dock already did it for this result)."""
        from .review_jobs import prepare_dotplot

        s = self.session
        if self.annotation is None or (self.runner.busy and not sync):
            return None
        inputs = {"query": s.query, "reference": s.reference, "label_key": s.label_key}
        annotation = self.annotation
        self._data_for = annotation

        def done(data, annotation=annotation):
            if annotation is self.annotation:
                self.data = data
                self.draw()

        if sync:
            return self.runner.run_sync(prepare_dotplot, self.result, inputs, on_done=done)
        return self.runner.start(prepare_dotplot, self.result, inputs, on_done=done, what="marker dotplot")

    def _draw_umap(self, ax) -> None:
        if self.map is None or self._map_for is not self.result:
            ax.text(0.5, 0.5, "press “Compute UMAP”", ha="center", va="center")
            ax.set_axis_off()
            return
        m = self.map
        ann = self.annotation
        by_type = self.color_combo.currentText() == "type"
        q = m[m["dataset"] == "query"]
        r = m[m["dataset"] == "reference"]
        if by_type:
            q_types = ann.cell_type.to_numpy()[q["row"].to_numpy()]
            q_col = np.array([ann.color_of(t) for t in q_types]) if len(q) else np.zeros((0, 4))
            ref_labels = getattr(self.result, "reference_labels", None)
            if len(r) and ref_labels is not None:
                r_types = np.asarray(ref_labels)[r["row"].to_numpy()]
                r_col = np.array([ann.color_of(t) if t in ann.categories else (0.5, 0.5, 0.5, 1) for t in r_types])
                ax.scatter(r["x"], r["y"], s=6, c=r_col, marker="x", linewidths=0.5, label="reference")
        else:
            q_col = "tab:blue"
            if len(r):
                ax.scatter(r["x"], r["y"], s=6, c="tab:orange", marker="x", linewidths=0.5, label="reference")
        self._query_points = q
        ax.scatter(q["x"], q["y"], s=4, c=q_col, picker=True, pickradius=4, label="query (Xenium)")
        rows = getattr(self, "focus_rows", None)
        if rows is not None and len(r):
            hit = r[r["row"].isin(rows)]
            ax.scatter(hit["x"], hit["y"], s=60, facecolors="none", edgecolors="black", linewidths=1.2,
                       label=self.focus_title or "highlighted reference cells")
            ax.legend(loc="best", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        what = "query (dots), reference (x)" if len(r) else "query"
        ax.set_title(f"{self.map_note}\n{what}", fontsize=8)
        if not by_type:
            ax.legend(loc="best", fontsize=7, markerscale=2)

    def _draw_composition(self, ax) -> None:
        ann = self.annotation
        counts = ann.counts().sort_values()
        colors = [ann.color_of(t) for t in counts.index]
        ax.barh(counts.index.astype(str), counts.to_numpy(), color=colors)
        ax.set_xlabel("cells")
        ax.set_title("cell-type composition")
        ax.tick_params(axis="y", labelsize=7)

    def _draw_contingency(self, ax) -> None:
        from ..core.summaries import contingency

        name = self.other_combo.currentText()
        other = getattr(self, "_others", {}).get(name)
        if other is None:
            ax.text(0.5, 0.5, "no other categorical column", ha="center", va="center")
            ax.set_axis_off()
            return
        table = contingency(self.annotation.cell_type, other)
        cols = sorted(table.columns, key=lambda c: (len(c), c))
        table = table[cols]
        im = ax.imshow(table.to_numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1)
        ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=90)
        ax.set_xlabel(name)
        ax.set_title(f"{CELL_TYPE} vs {name}\n(share of each type's cells)", fontsize=9)
        self.figure.colorbar(im, ax=ax, fraction=0.04)

    def contingency_table(self, name: str) -> pd.DataFrame:
        from ..core.summaries import contingency

        return contingency(self.annotation.cell_type, self.other_columns()[name])

    # ------------------------------------------------------------------ picking
    def _on_pick(self, event) -> None:
        if getattr(event, "ind", None) is None or not len(event.ind):
            return
        self.select_point(int(event.ind[0]))

    def select_point(self, i: int) -> str | None:
        """Select on the tissue the query cell of the ``i``-th UMAP query point."""
        q = getattr(self, "_query_points", None)
        if q is None or i >= len(q):
            return None
        cell = str(self.annotation.cell_ids[int(q["row"].iloc[i])])
        self.session.selection.select([cell])
        self.info.setText(f"selected {cell} ({self.annotation.cell_type.iloc[int(q['row'].iloc[i])]})")
        return cell
