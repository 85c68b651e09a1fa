"""The niche dock's result views: composition heatmap and marker-gene table.

:func:`draw_composition` draws cluster x neighbour-type fractions on a matplotlib figure and
returns the frame it drew (rows in drawing order) and its axes, so that a click on a row
can be mapped back to a cluster; :func:`fill_marker_table` fills a ``QTableWidget`` with the
marker genes of every cluster. Both take the cluster colours of the niche layer.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

from .._constants import (
    GENE,
    MARKER_LOGFC,
    MARKER_PCT_IN,
    MARKER_PCT_REST,
    MARKER_PVAL_ADJ,
    NICHE_CLUSTER,
)
from ..core.palette import to_hex
from .legend import swatch

MARKER_TABLE_COLUMNS = (
    (NICHE_CLUSTER, "niche"),
    (GENE, "gene"),
    (MARKER_LOGFC, "log2 FC"),
    (MARKER_PCT_IN, "% in niche"),
    (MARKER_PCT_REST, "% in rest"),
    (MARKER_PVAL_ADJ, "adj. p"),
)


def natural(names) -> list[str]:
    """Names in natural order: "2" before "10"."""

    def key(text):
        return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", text)]

    return sorted((str(n) for n in names), key=key)


def draw_composition(figure, result, colors: dict, empty_message: str):
    """Draw the heatmap of ``result.composition`` on ``figure``; returns ``(frame, axes)``,
    both None when there is nothing to draw (then ``empty_message`` is shown)."""
    figure.clear()
    ax = figure.add_subplot(111)
    if result is None or not len(result.composition):
        ax.text(0.5, 0.5, empty_message, ha="center", va="center", fontsize=9)
        ax.set_axis_off()
        return None, None
    comp = result.composition.copy()
    comp.index = comp.index.astype(str)
    comp = comp.loc[natural(comp.index)]
    comp = comp.loc[:, (comp > 0).any(axis=0)]
    im = ax.imshow(comp.to_numpy(), aspect="auto", cmap="Greens", vmin=0.0, vmax=max(0.5, float(comp.max().max())))
    sizes = result.sizes.copy()
    sizes.index = sizes.index.astype(str)
    ax.set_yticks(range(len(comp.index)), [f"■ niche {c} ({int(sizes.get(c, 0))})" for c in comp.index],
                  fontsize=7)
    for label, c in zip(ax.get_yticklabels(), comp.index):
        label.set_color(to_hex(colors.get(c, (0, 0, 0, 1))))
        label.set_fontweight("bold")
    ax.set_xticks(range(len(comp.columns)), [str(t) for t in comp.columns], fontsize=6, rotation=60, ha="right")
    values = comp.to_numpy()
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if values[i, j] >= 0.05:
                ax.text(j, i, f"{values[i, j]:.0%}", ha="center", va="center", fontsize=5.5,
                        color="white" if values[i, j] > 0.35 else "black")
    ax.set_xlabel("neighbour cell type", fontsize=7)
    ax.set_title(f"neighbours of the {', '.join(result.params.get('cell_types', []))} niches", fontsize=8)
    figure.colorbar(im, ax=ax, fraction=0.04)
    return comp, ax


def fill_marker_table(table, result, colors: dict) -> None:
    """One row per (cluster, marker gene) of ``result.markers``, clusters in natural order."""
    table.setRowCount(0)
    if result is None or result.markers is None or not len(result.markers):
        return
    m = result.markers.copy()
    m[NICHE_CLUSTER] = m[NICHE_CLUSTER].astype(str)
    order = {c: i for i, c in enumerate(natural(m[NICHE_CLUSTER].unique()))}
    m = m.iloc[np.argsort(m[NICHE_CLUSTER].map(order).to_numpy(), kind="stable")]
    table.setRowCount(len(m))
    for row, (_i, rec) in enumerate(m.iterrows()):
        for col, (key, _label) in enumerate(MARKER_TABLE_COLUMNS):
            table.setItem(row, col, _marker_item(key, rec.get(key), colors))
    table.resizeColumnsToContents()


def _marker_item(key: str, value, colors: dict) -> QTableWidgetItem:
    if key == NICHE_CLUSTER:
        item = QTableWidgetItem(str(value))
        item.setIcon(swatch(colors.get(str(value), (0.5, 0.5, 0.5, 1))))
        item.setData(Qt.UserRole, str(value))
        return item
    if key == GENE:
        return QTableWidgetItem(str(value))
    if pd.isna(value):
        return QTableWidgetItem("")
    if key in (MARKER_PCT_IN, MARKER_PCT_REST):
        return QTableWidgetItem(f"{float(value):.0%}")
    if key == MARKER_PVAL_ADJ:
        return QTableWidgetItem(f"{float(value):.2g}")
    return QTableWidgetItem(f"{float(value):.2f}")
