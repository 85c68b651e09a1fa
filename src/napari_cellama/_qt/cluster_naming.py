"""The reference-fit warning and cluster naming of the "4. Review" dock.

After a transfer the dock computes the reference fit report
(:func:`napari_cellama.core.reference_fit_report`) off the GUI thread; clusters that are
mostly Unknown are "types possibly missing from the reference". This panel says so
prominently (a coloured banner), lists every cluster with its size, share of Unknown and
low-confidence cells, dominant label and top markers (flagged clusters first), shows a
cluster's cells on the tissue (they become the session's selection) and names a cluster in
one step: a manual label for all its cells (``reason="cluster"``, undoable). The same works
for the Xenium run's graph clusters and the niche clusters (issue 17, item 10).
"""

from __future__ import annotations

import pandas as pd
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .evidence_panel import fill_table, read_only_table

_HEADERS = {"n_cells": "cells", "share_unknown": "Unknown", "share_low_confidence": "low conf.",
            "share_unassigned": "Unassig.", "dominant_label": "dominant", "dominant_share": "share",
            "top_markers": "top markers", "cluster_novelty": "novelty", "cluster_residual": "residual ×typical",
            "detection_ratio": "detection ×typical", "joint_enrichment": "co-clustering",
            "profile_residual": "residual"}
FIT_CLUSTERS = "reference-fit clusters"
XENIUM_CLUSTERS = "Xenium graph clusters"
NICHE_CLUSTERS = "niche clusters"
WARNING_STYLE = "background-color: #b35900; color: white; padding: 6px; font-weight: bold; border-radius: 4px;"


def fit_warning_text(report) -> str:
    """The banner of a fit report ('' when no cluster is flagged)."""
    if report is None:
        return ""
    miss = report.possibly_missing
    if not len(miss):
        return ""
    n = int(miss["n_cells"].sum())
    parts = [f"cluster {r['cluster']} ({int(r['n_cells']):,} cells: {r['top_markers']})" for _, r in miss.head(4).iterrows()]
    more = f"; {len(miss) - 4} more" if len(miss) > 4 else ""
    return (f"⚠ Types possibly missing from the reference: {len(miss)} cluster(s), {n:,} cells, are mostly "
            f"Unknown — " + "; ".join(parts) + more + ". Their markers say what they are: name them below.")


def _resolution_line(report) -> str:
    """The fit table's line on the pairs of reference types the panel does not tell apart."""
    res = getattr(report, "panel_resolution", None)
    return "" if res is None or not len(res.pairs) else "\n⚠ " + res.short()


def _resolution_tip(report) -> str:
    res = getattr(report, "panel_resolution", None)
    return "" if res is None else res.summary()


class ClusterPanel(QWidget):
    """Cluster list of one clustering + show on tissue + name it (see the module docstring)."""

    show_requested = Signal(str, str)
    """``(clustering, cluster)``."""
    name_requested = Signal(str, str, str)
    """``(clustering, cluster, new type name)``."""
    source_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(WARNING_STYLE)
        self.banner.setVisible(False)
        self.source_combo = QComboBox()
        self.source_combo.currentTextChanged.connect(self.source_changed.emit)
        self.info = QLabel("The reference fit report appears here after a transfer.")
        self.info.setWordWrap(True)
        self.info.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)  # wrapped lines never clipped
        self.table = read_only_table(16777215)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.itemSelectionChanged.connect(self._on_row)
        self.show_button = QPushButton("Show on tissue")
        self.show_button.clicked.connect(lambda: self._emit_show())
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("cell type name, e.g. Erythroid")
        self.name_button = QPushButton("Name this cluster")
        self.name_button.setToolTip("give every cell of the cluster this label (manual, reason 'cluster'; undoable)")
        self.name_button.clicked.connect(lambda: self._emit_name())
        src = QHBoxLayout()
        src.addWidget(QLabel("clusters"))
        src.addWidget(self.source_combo, 1)
        row = QHBoxLayout()
        row.addWidget(self.show_button)
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.name_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(src)
        layout.addWidget(self.info)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self._clusters: list[str] = []

    @property
    def clustering(self) -> str:
        return self.source_combo.currentText()

    @property
    def current_cluster(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if rows:
            return self._clusters[rows[0].row()]
        return None

    def set_sources(self, names) -> None:
        current = self.source_combo.currentText()
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(list(names))
        if current in names:
            self.source_combo.setCurrentText(current)
        self.source_combo.blockSignals(False)

    def set_warning(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def show_clusters(self, table: pd.DataFrame, info: str) -> None:
        """``table``: one row per cluster with a ``cluster`` column (shown as it is)."""
        self.info.setText(info)
        self._clusters = [str(c) for c in table["cluster"]]
        cols = [c for c in table.columns if c not in ("possibly_missing", "unknown_call")]  # the call: info line
        rows = []
        for _, r in table.iterrows():
            rows.append([f"{r[c]:.0%}" if c.startswith("share") or c == "dominant_share" else
                         ("–" if pd.isna(r[c]) else f"{r[c]:.2f}") if isinstance(r[c], float) else r[c] for c in cols])
        fill_table(self.table, [_HEADERS.get(c, c.replace("_", " ")) for c in cols], rows)
        header = self.table.horizontalHeader()
        for j in range(len(cols)):
            header.setSectionResizeMode(j, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(len(cols) - 1, QHeaderView.Stretch)
        for i in range(self.table.rowCount()):  # full text (long marker lists) on hover
            for j in range(len(cols)):
                item = self.table.item(i, j)
                item.setToolTip(item.text())

    def select_cluster(self, cluster: str) -> bool:
        if str(cluster) not in self._clusters:
            return False
        self.table.selectRow(self._clusters.index(str(cluster)))
        return True

    def _on_row(self) -> None:
        c = self.current_cluster
        if c is not None:
            self.name_button.setText(f"Name cluster {c}")

    def _emit_show(self) -> None:
        if (c := self.current_cluster) is not None:
            self.show_requested.emit(self.clustering, c)

    def _emit_name(self) -> None:
        c, name = self.current_cluster, self.name_edit.text().strip()
        if c is not None and name:
            self.name_requested.emit(self.clustering, c, name)


def cluster_summary(clusters: pd.Series, annotation) -> pd.DataFrame:
    """One row per cluster of ``clusters`` (cell id -> cluster): size and dominant current label."""
    cl = pd.Series(clusters).astype(str)
    labels = annotation.cell_type.reindex(cl.index.astype(str)).astype(str)
    df = pd.DataFrame({"cluster": cl.to_numpy(), "label": labels.to_numpy()})
    g = df.groupby("cluster", sort=False)
    out = pd.DataFrame({"n_cells": g.size(),
                        "dominant_label": g["label"].agg(lambda s: s.value_counts().index[0]),
                        "dominant_share": g["label"].agg(lambda s: s.value_counts(normalize=True).iloc[0])})
    out = out.rename_axis("cluster").reset_index()
    order = sorted(range(len(out)), key=lambda i: (len(out["cluster"].iloc[i]), out["cluster"].iloc[i]))
    return out.iloc[order].reset_index(drop=True)


CLUSTER_REASON = "cluster"


class ClusterNamingMixin:
    """Cluster table, show and name, mixed into the review dock (needs ``session``,
    ``annotation``, ``data``, ``clusters`` (a :class:`ClusterPanel`), ``status``, ``runner``)."""

    def cluster_sources(self) -> dict:
        """``{clustering name: Series cell id -> cluster}`` available now."""
        from ..io.xenium import read_xenium_clusters

        out = {}
        if self.data is not None and self.data.fit_clusters is not None:
            out[FIT_CLUSTERS] = self.data.fit_clusters
        root = self.session.xenium_root
        if root is not None:
            try:
                xc = read_xenium_clusters(root)
            except Exception:  # noqa: BLE001 - an unreadable file only hides this choice
                xc = None
            if xc is not None:
                out[XENIUM_CLUSTERS] = xc
        nc = None
        if self.session.niche is not None:
            nc = self.session.niche.clusters
        elif self.annotation is not None and self.annotation.niche_cluster is not None:
            nc = self.annotation.niche_cluster
        if nc is not None:
            nc = pd.Series(nc).dropna().astype(str)
            if len(nc):
                out[NICHE_CLUSTERS] = nc
        return out

    def _fill_sources(self) -> None:
        self._sources = self.cluster_sources()
        self.clusters.set_sources(list(self._sources))
        self.show_clustering()

    def show_clustering(self) -> None:
        """Fill the cluster table of the chosen clustering."""
        if self.annotation is None:
            return
        name = self.clusters.clustering
        clusters = getattr(self, "_sources", {}).get(name)
        if clusters is None:
            return
        report = self.session.fit_report
        if name == FIT_CLUSTERS and report is not None:
            info = (f"reference fit per cluster of {report.cluster_source}; flagged clusters (≥ "
                    f"{report.missing_share:.0%} Unknown) first" + (
                        f"\nUnknown call: {report.unknown_call.split(' - ')[0]}" if report.unknown_call else "")
                    + _resolution_line(report))
            table = report.table
        else:
            info = f"{name}: size and dominant current label"
            table = cluster_summary(clusters, self.annotation)
        self.clusters.show_clusters(table, info)
        self.clusters.info.setToolTip("\n".join(filter(None, (report.unknown_call, _resolution_tip(report))))
                                      if name == FIT_CLUSTERS and report is not None else "")

    def cluster_cells(self, cluster: str, clustering: str | None = None) -> pd.Index:
        clusters = getattr(self, "_sources", {}).get(clustering or self.clusters.clustering)
        if clusters is None:
            return pd.Index([])
        ids = pd.Index(clusters.index[clusters.astype(str).to_numpy() == str(cluster)].astype(str))
        return ids[ids.isin(self.annotation.cell_ids)] if self.annotation is not None else ids

    def show_cluster(self, cluster: str, clustering: str | None = None) -> int:
        """Select the cluster's cells on the tissue; returns their number."""
        ids = self.cluster_cells(cluster, clustering)
        self.session.selection.select(ids)
        self.status.setText(f"cluster {cluster}: {len(ids):,} cells selected on the tissue")
        return len(ids)

    def name_cluster(self, cluster: str, name: str, clustering: str | None = None):
        """Label every cell of ``cluster`` ``name`` in one undoable edit (reason ``cluster``)."""
        ids = self.cluster_cells(cluster, clustering)
        if self.annotation is None or not len(ids) or not str(name).strip():
            self.runner.fail("choose a cluster and type a name")
            return None
        edit = self.annotation.assign(ids, str(name), reason=CLUSTER_REASON)
        self.status.setText(f"{len(ids):,} cells of cluster {cluster} labelled {name} (undo in dock 2)")
        self.show_clustering()
        return edit
