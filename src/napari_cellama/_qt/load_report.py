"""The load dock's panel report: an HTML summary and the per-type marker-coverage table.

Shown after "Load and check panel", before anything is embedded: panel size, shared genes
and the counts they carry, cells with fewer than top-k detected shared genes, and for each
reference type how many of its top markers the panel measures (low coverage flagged).
"""

from __future__ import annotations

import html

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QTableWidgetItem

from .._constants import LOW_MARKER_COVERAGE
from ..core.coverage import coverage_text

LOW_COLOR = QColor(255, 170, 60, 90)


def panel_report_html(r, n_markers: int) -> str:
    """The summary of a :class:`~napari_cellama._qt.load_jobs.LoadResult` as rich text."""
    p = r.panel
    n_types = len(r.coverage)
    low = r.coverage[r.coverage["low_coverage"]]
    pct_cells = 100.0 * p.n_query_cells_below_top_k / max(p.n_query_cells, 1)
    lines = [
        (
            f"<b>Xenium run</b> {html.escape(r.xenium_root.name)}: "
            f"{p.n_query_cells:,} cells, panel of {p.n_query_genes:,} genes"
        ),
        (
            f"<b>Reference</b> {html.escape(r.reference_path.name)}: "
            f"{r.reference.n_obs:,} cells, {p.n_reference_genes:,} genes; "
            f"{n_types} types in <i>{html.escape(r.label_key)}</i>"
        ),
        (
            f"<b>Shared genes</b>: {p.n_shared:,}, carrying "
            f"{p.reference_fraction_shared:.1%} of the reference's counts and "
            f"{p.query_fraction_shared:.1%} of the run's"
        ),
        (
            f"<b>Cells with fewer than {p.top_k} detected shared genes</b>: "
            f"{p.n_query_cells_below_top_k:,} of {p.n_query_cells:,} ({pct_cells:.1f}%)"
        ),
    ]
    if p.query_duplicates or p.reference_duplicates:
        lines.append(
            f"duplicate symbols summed: run {len(p.query_duplicates)}, "
            f"reference {len(p.reference_duplicates)}"
        )
    if len(low):
        names = ", ".join(html.escape(str(t)) for t in low["cell_type"])
        lines.append(
            f"<span style='color:#e69500'><b>Low marker coverage</b> (under "
            f"{LOW_MARKER_COVERAGE:.0%} of the top {n_markers} markers in the panel): "
            f"{names}</span>"
        )
    else:
        lines.append(
            f"Every type has at least {LOW_MARKER_COVERAGE:.0%} of its top {n_markers} markers "
            "in the panel."
        )
    return "<br>".join(lines)


def fill_coverage_table(table, coverage) -> None:
    """One row per reference type: cells, markers in the panel, coverage (low ones highlighted)."""
    table.setRowCount(len(coverage))
    for i, row in enumerate(coverage.itertuples(index=False)):
        frac = row.fraction
        cov_text = "n/a (too few cells)" if not np.isfinite(frac) else f"{frac:.0%}"
        if row.low_coverage:
            cov_text += "  low"
        items = [
            QTableWidgetItem(str(row.cell_type)),
            QTableWidgetItem(f"{row.n_cells:,}"),
            QTableWidgetItem(f"{row.n_in_panel} / {row.n_markers}" + (": " + ", ".join(row.markers_in_panel[:4]) if row.n_in_panel else "")),
            QTableWidgetItem(cov_text),
        ]
        tip = coverage_text(row._asdict(), max_listed=20).replace("; ", "\n")
        for j, item in enumerate(items):
            item.setToolTip(tip)
            if j:
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            if row.low_coverage:
                item.setBackground(LOW_COLOR)
            table.setItem(i, j, item)
