"""The marker dotplot of the "4. Review" dock (matplotlib), clickable.

Rows: the query's current labels; columns: the top reference markers of each type
(:func:`napari_cellama.core.dotplot.marker_genes_in_order`); dot size: fraction of the
label's cells expressing the gene; colour: mean log-normalised expression. Click a label
(its tick or a dot of its row with the gene column ignored) to select its cells on the
tissue; click a gene's tick to show its expression as a layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget


class DotplotView(QWidget):
    """The dotplot canvas (see the module docstring)."""

    group_clicked = Signal(str)
    gene_clicked = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(300)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.canvas.mpl_connect("pick_event", self._on_pick)
        self.info = QLabel("Top reference markers of each type (columns, grouped by type) over the query cells by "
                           "current label (rows): dot size = fraction expressing, colour = mean expression. "
                           "Click a label to select its cells; click a gene to show its expression as a layer.")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.info)
        layout.addWidget(self.canvas, 1)
        self.table: pd.DataFrame | None = None
        self.groups: list[str] = []
        self.genes: list[str] = []
        self.group_ticks: list = []
        self.gene_ticks: list = []

    def draw(self, table: pd.DataFrame | None, marker_types: dict | None = None) -> None:
        """Draw a :func:`~napari_cellama.core.dotplot.dotplot_table` (None: an empty plot).

        ``marker_types``: ``{gene: reference type it marks}`` for the column labels.
        """
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        self.table = table
        if table is None or not len(table):
            ax.text(0.5, 0.5, "no markers yet (run a transfer)", ha="center", va="center")
            ax.set_axis_off()
            self.canvas.draw_idle()
            return
        self.genes = list(dict.fromkeys(table["gene"]))
        self.groups = sorted(dict.fromkeys(table["group"]))
        gx = {g: i for i, g in enumerate(self.genes)}
        gy = {g: i for i, g in enumerate(self.groups)}
        x = table["gene"].map(gx).to_numpy()
        y = table["group"].map(gy).to_numpy()
        size = 4 + 160 * table["fraction"].to_numpy()
        sc = ax.scatter(x, y, s=size, c=table["mean"].to_numpy(), cmap="Reds", vmin=0,
                        edgecolors="grey", linewidths=0.3)
        n = table.drop_duplicates("group").set_index("group")["n_cells"]
        ax.set_yticks(np.arange(len(self.groups)), [f"{g} ({int(n.get(g, 0)):,})" for g in self.groups], fontsize=7)
        ax.set_xticks(np.arange(len(self.genes)), self.genes, fontsize=7, rotation=90)
        ax.set_xlim(-0.7, len(self.genes) - 0.3)
        ax.set_ylim(-0.7, len(self.groups) - 0.3)
        ax.invert_yaxis()
        if marker_types:
            # the reference type each group of columns marks, above the columns, groups split by lines
            start = 0
            for i in range(1, len(self.genes) + 1):
                t = marker_types.get(self.genes[start])
                if i == len(self.genes) or marker_types.get(self.genes[i]) != t:
                    ax.text((start + i - 1) / 2, -0.9, str(t), fontsize=6, rotation=90, ha="center", va="bottom")
                    if i < len(self.genes):
                        ax.axvline(i - 0.5, color="lightgrey", linewidth=0.6, zorder=0)
                    start = i
        cb = self.figure.colorbar(sc, ax=ax, fraction=0.04, pad=0.02)
        cb.set_label("mean log-norm. expression", fontsize=7)
        cb.ax.tick_params(labelsize=6)
        self.group_ticks = list(ax.get_yticklabels())
        self.gene_ticks = list(ax.get_xticklabels())
        for t in self.group_ticks + self.gene_ticks:
            t.set_picker(True)
        self.canvas.draw()

    def _on_pick(self, event) -> None:
        artist = event.artist
        if artist in self.group_ticks:
            self.group_clicked.emit(self.groups[self.group_ticks.index(artist)])
        elif artist in self.gene_ticks:
            self.gene_clicked.emit(self.genes[self.gene_ticks.index(artist)])

    def click_tick(self, kind: str, name: str) -> None:
        """Click the tick label of a group (``kind="group"``) or gene, as a mouse would (tests)."""
        from matplotlib.backend_bases import MouseEvent

        ticks, names = (self.group_ticks, self.groups) if kind == "group" else (self.gene_ticks, self.genes)
        artist = ticks[names.index(name)]
        renderer = self.canvas.get_renderer()
        box = artist.get_window_extent(renderer)
        x, y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        event = MouseEvent("button_press_event", self.canvas, x, y, button=1)
        self.canvas.callbacks.process("button_press_event", event)


EXPRESSION_LAYER = "expression: {gene}"


class DotplotMixin:
    """Draw the dotplot and act on its clicks, mixed into the review dock (needs ``viewer``,
    ``session``, ``annotation``, ``data``, ``dotplot`` (a :class:`DotplotView`), ``selection_view``)."""

    def draw_dotplot(self) -> None:
        if self.data is None or self.data.dotplot is None or self.annotation is None:
            self.dotplot.draw(None)
            return
        table = self.data.dotplot.table(self.annotation.cell_type)
        from ..core.dotplot import marker_genes_in_order

        m = self.data.markers
        kinds: dict = {}  # the type whose column group a gene is drawn in (as marker_genes_in_order picks it)
        for t in sorted(m["cell_type"].unique()):
            for g in marker_genes_in_order(m, [t]):
                kinds.setdefault(g, t)
        self.dotplot.draw(table, {g: kinds.get(g) for g in self.data.dotplot.genes})
        self._dotplot_dirty = False

    def select_label(self, label: str) -> int:
        """Select every cell currently labelled ``label``."""
        if self.annotation is None:
            return 0
        ids = self.annotation.cells_of(label)
        self.session.selection.select(ids)
        self.dotplot.info.setText(f"{label}: {len(ids):,} cells selected on the tissue")
        return len(ids)

    def show_gene(self, gene: str):
        """Add (or replace) a layer of ``gene``'s log-normalised expression per cell."""
        from napari.layers import Layer

        from .. import layers as L
        from .selection_view import cells_layer

        cells = cells_layer(self.viewer, self.session)
        if cells is None or self.data is None or self.data.dotplot is None or self.annotation is None:
            return None
        ids = self.annotation.cell_ids
        values = self.data.dotplot.values(gene, ids)
        name = EXPRESSION_LAYER.format(gene=gene)
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_layer(Layer.create(*L.cell_values_layer_data(cells, ids, values, name=name,
                                                                             colormap="magma")))
        layer.colorbar.visible = True
        self.viewer.layers.move(self.viewer.layers.index(cells), len(self.viewer.layers))
        self.selection_view.raise_above_maps()  # the selection's outlines over the new map
        self.viewer.layers.selection.active = cells
        self.dotplot.info.setText(f"{gene}: expression layer '{name}' added")
        return layer
