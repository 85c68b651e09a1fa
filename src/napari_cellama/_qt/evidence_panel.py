"""The evidence panel of the "4. Review" dock: why one cell got its label.

Shows a :class:`~napari_cellama.core.evidence.CellEvidence`: the cell's label, confidence,
runner-up, Unknown score and unassigned reason; its sentence and counts on the shared
panel; the vote of its nearest reference cells (a bar per label, in the types' colours) and
those cells (label, cosine similarity); the marker check (the reference markers of its
label and runner-up, and this cell's counts of each: a wrong call is visible at a glance).
Its buttons write to the session's annotation (accept, reassign, Unknown: undoable edits
with ``reason="review"``) and ask the plots dock to show the neighbours on the UMAP.
"""

from __future__ import annotations

import html

from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._constants import UNKNOWN


def fill_table(table: QTableWidget, header: list[str], rows: list[list]) -> None:
    """Replace ``table``'s content (read-only cells, columns fitted to the width)."""
    table.clear()
    table.setColumnCount(len(header))
    table.setHorizontalHeaderLabels(header)
    table.setRowCount(len(rows))
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            table.setItem(i, j, QTableWidgetItem(str(value)))
    table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)


def read_only_table(height: int = 150) -> QTableWidget:
    t = QTableWidget()
    t.setEditTriggers(QTableWidget.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    t.setMaximumHeight(height)
    return t


class VoteBars(QWidget):
    """A bar per label (share of the vote), in the types' colours, painted by Qt (no figure)."""

    MAX_BARS = 6
    ROW = 18

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bars: list[tuple[str, float, tuple]] = []
        self.setMinimumHeight(self.ROW * 2)

    def set_bars(self, bars) -> None:
        """``[(label, share, rgba)]``, highest first."""
        self.bars = list(bars)[: self.MAX_BARS]
        self.setMinimumHeight(self.ROW * max(len(self.bars), 1) + 4)
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt name)
        p = QPainter(self)
        w = self.width()
        label_w = min(170, w // 2)
        for i, (label, share, rgba) in enumerate(self.bars):
            y = 2 + i * self.ROW
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(QRectF(0, y, label_w - 4, self.ROW - 2), int(Qt.AlignRight | Qt.AlignVCenter), label)
            bar = max(1.0, (w - label_w - 48) * float(share))
            r, g, b = (int(255 * float(c)) for c in rgba[:3])
            p.fillRect(QRectF(label_w, y + 2, bar, self.ROW - 6), QColor(r, g, b))
            p.drawText(QRectF(label_w + bar + 4, y, 44, self.ROW - 2), int(Qt.AlignLeft | Qt.AlignVCenter),
                       f"{share:.0%}")
        p.end()


class EvidencePanel(QWidget):
    """Evidence of one cell + accept / reassign / Unknown / show on UMAP (see module docstring)."""

    accept_requested = Signal(str)
    reassign_requested = Signal(str, str)
    """``(cell_id, new type)``."""
    neighbours_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.evidence = None
        self.header = QLabel("Click a cell (or pick one in the review queue) to see why it got its label.")
        self.header.setWordWrap(True)
        self.sentence = QLabel()
        self.sentence.setWordWrap(True)
        for label in (self.header, self.sentence):
            label.setMinimumWidth(50)  # wrap instead of widening the dock
        self.vote_bars = VoteBars()
        self.neighbours = read_only_table(140)
        self.markers = read_only_table(170)
        self.umap_button = QPushButton("Show neighbours on UMAP")
        self.umap_button.setToolTip("highlight this cell's nearest reference cells in the Plots dock's UMAP")
        self.umap_button.clicked.connect(lambda: self._emit(self.neighbours_requested))
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("keep the label and mark the cell reviewed (undoable)")
        self.accept_button.clicked.connect(lambda: self._emit(self.accept_requested))
        self.type_combo = QComboBox()
        self.type_combo.setEditable(True)
        self.type_combo.setToolTip("a reference type, Unknown, or a new name")
        self.reassign_button = QPushButton("Reassign")
        self.reassign_button.clicked.connect(lambda: self.reassign(self.type_combo.currentText()))
        self.unknown_button = QPushButton(UNKNOWN)
        self.unknown_button.setToolTip("label the cell Unknown (a type the reference lacks) and mark it reviewed")
        self.unknown_button.clicked.connect(lambda: self.reassign(UNKNOWN))
        row1 = QHBoxLayout()
        row1.addWidget(self.accept_button)
        row1.addWidget(self.unknown_button)
        row1.addWidget(self.umap_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.type_combo, 1)
        row2.addWidget(self.reassign_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.sentence)
        layout.addWidget(QLabel("vote of the nearest reference cells"))
        layout.addWidget(self.vote_bars)
        layout.addWidget(self.neighbours)
        layout.addWidget(QLabel("marker check (reference markers; this cell's counts)"))
        layout.addWidget(self.markers)
        layout.addLayout(row1)
        layout.addLayout(row2)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.umap_button, self.accept_button, self.reassign_button, self.unknown_button, self.type_combo):
            w.setEnabled(on)

    def _emit(self, signal) -> None:
        if self.evidence is not None:
            signal.emit(self.evidence.cell_id)

    def reassign(self, cell_type: str) -> None:
        name = (cell_type or "").strip()
        if self.evidence is not None and name:
            self.reassign_requested.emit(self.evidence.cell_id, name)

    def set_types(self, types) -> None:
        current = self.type_combo.currentText()
        self.type_combo.clear()
        self.type_combo.addItems([str(t) for t in types])
        if current:
            self.type_combo.setCurrentText(current)

    def show_message(self, text: str) -> None:
        self.evidence = None
        self.header.setText(text)
        self.sentence.setText("")
        self.neighbours.setRowCount(0)
        self.markers.setRowCount(0)
        self.vote_bars.set_bars([])
        self._set_enabled(False)

    def show_evidence(self, ev, color_of=None) -> None:
        """Show a :class:`~napari_cellama.core.evidence.CellEvidence` (``color_of(type)`` -> RGBA)."""
        self.evidence = ev
        e = html.escape
        bits = [f"<b>{e(ev.cell_id)}</b>: <b>{e(ev.label)}</b>"]
        if ev.label != ev.transferred_type:
            bits.append(f"(transferred: {e(ev.transferred_type)})")
        bits.append(f"confidence {ev.confidence:.2f}")
        if ev.runner_up:
            bits.append(f"runner-up {e(ev.runner_up)}")
        if ev.unknown_score is not None:
            bits.append(f"Unknown score {ev.unknown_score:.2f}")
        if ev.unassigned_reason:
            bits.append(f"unassigned: {e(ev.unassigned_reason)}")
        if ev.label_source:
            bits.append(f"source {e(ev.label_source)}")
        bits.append("reviewed ✔" if ev.reviewed else "not reviewed")
        self.header.setText(" · ".join(bits))
        counts = ", ".join(f"{g} {c:g}" for g, c in ev.counts.head(25).items())
        more = f" … ({len(ev.counts)} genes detected)" if len(ev.counts) > 25 else f" ({len(ev.counts)} genes)"
        self.sentence.setText(f"<i>{e(ev.sentence)}</i><br>counts on the shared panel: {e(counts)}{more}")
        fill_table(self.neighbours, ["reference cell", "label", "similarity"],
                   [[r.reference_cell, r.label, f"{r.similarity:.3f}"] for r in ev.neighbours.itertuples()])
        fill_table(self.markers, ["type", "marker", "counts", "detected", "in ref. type"],
                   [[r.cell_type, r.gene, f"{r.counts:g}", "✔" if r.detected else "✘", f"{r.fraction_in:.0%}"]
                    for r in ev.markers.itertuples()])
        self._draw_vote(ev, color_of)
        self.type_combo.setCurrentText(ev.runner_up or ev.label)
        self._set_enabled(True)

    def _draw_vote(self, ev, color_of) -> None:
        grey = (0.3, 0.5, 0.8, 1.0)
        self.vote_bars.set_bars([(str(t), float(v), color_of(t) if color_of is not None else grey)
                                 for t, v in ev.vote.items()])

    def marker_lines(self) -> list[str]:
        """The marker check as shown (``type gene counts detected``), for tests and reports."""
        out = []
        for i in range(self.markers.rowCount()):
            out.append(" ".join(self.markers.item(i, j).text() for j in range(4)))
        return out
