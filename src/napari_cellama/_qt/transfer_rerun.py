"""Re-running the transfer without losing work: ask, carry the edits over, compare run A with B.

When "Run transfer" would replace an annotation that holds work (manual labels, a moved
threshold, niche clusters), the dock asks (:func:`rerun_question`): **Carry edits over**
(the manual labels are applied to the new run cell by cell, with their reasons, as
``manual:carried:<reason>``; reviewed cells that keep their label stay reviewed; the
threshold and the niche clusters move over too), **Discard** (the new run as it comes) or
**Cancel**. Either way the replaced run is kept as ``session.previous_transfer`` and
"Compare with previous run…" shows the contingency of run A (rows) against run B
(columns) with the share of cells that kept their type (:class:`RunComparison`);
"Show previous run" swaps the two.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

CARRY, DISCARD = "carry", "discard"
CARRIED = "carried"
"""Reason prefix of the manual labels carried onto a new run (``manual:carried:<reason>``)."""
_MANUAL = "manual:"


def unsaved_work(annotation) -> list[str]:
    """What a new run would replace in ``annotation``: manual labels, threshold, niches."""
    if annotation is None:
        return []
    out = []
    n_manual = int(np.count_nonzero(annotation.manual_mask))
    if n_manual:
        out.append(f"{n_manual:,} manually labelled cells")
    if annotation.min_confidence > 0 or annotation.max_distance is not None:
        dist = "" if annotation.max_distance is None else f", max distance {annotation.max_distance:g}"
        out.append(f"the Unassigned threshold (confidence {annotation.min_confidence:.2f}{dist})")
    niches = annotation.niche_cluster
    if niches is not None and niches.notna().any():
        out.append(f"niche clusters of {int(niches.notna().sum()):,} cells")
    return out


def carry_work(old, new) -> dict:
    """Apply the work of annotation ``old`` to ``new`` (same cells, a new run); returns counts.

    Manual labels go over per cell, grouped by type and reason (``reason="carried:<reason>"``,
    reviewed cells stay reviewed); cells reviewed without a manual label stay reviewed when the
    new run gives them the same type; the threshold and niche clusters are copied.
    """
    shared = old.cell_ids.intersection(new.cell_ids)
    manual = pd.Series(old.manual_mask, index=old.cell_ids).reindex(shared)
    ids = shared[manual.to_numpy(bool)]
    types = old.cell_type.reindex(ids).astype(str)
    sources = old.label_source.reindex(ids).astype(str)
    reasons = sources.str.slice(len(_MANUAL)).where(sources.str.startswith(_MANUAL), "manual")
    reviewed = old.reviewed.reindex(ids).to_numpy(bool)
    groups = pd.DataFrame({"type": types.to_numpy(), "reason": reasons.to_numpy(), "reviewed": reviewed},
                          index=ids)
    for (cell_type, reason, was_reviewed), part in groups.groupby(["type", "reason", "reviewed"], sort=True):
        new.assign(part.index, cell_type, reason=f"{CARRIED}:{reason}", review=bool(was_reviewed))
    plain = old.reviewed.reindex(shared).to_numpy(bool) & ~manual.to_numpy(bool)
    same = old.cell_type.reindex(shared).astype(str).to_numpy() == new.cell_type.reindex(shared).astype(str).to_numpy()
    kept_reviewed = shared[plain & same]
    if len(kept_reviewed):
        new.mark_reviewed(kept_reviewed, reason=CARRIED)
    if old.min_confidence > 0 or old.max_distance is not None:
        new.set_threshold(old.min_confidence, old.max_distance)
    niches = old.niche_cluster
    if niches is not None and niches.notna().any():
        new.set_niche_clusters(niches.dropna())
    return {"manual": len(ids), "reviewed": len(kept_reviewed),
            "threshold": old.min_confidence, "niches": 0 if niches is None else int(niches.notna().sum())}


def compare_runs(previous, current) -> tuple[pd.DataFrame, float]:
    """Counts of run A's types (rows) against run B's (columns) and the share of cells that
    kept their type (current labels of both annotations, on their shared cells)."""
    from ..core.summaries import contingency

    a = previous.cell_type.astype(str)
    b = current.cell_type.astype(str)
    table = contingency(a, b, normalize=None)
    shared = a.index.intersection(b.index)
    agree = float((a.reindex(shared) == b.reindex(shared)).mean()) if len(shared) else 0.0
    return table, agree


def rerun_question(parent, work: list[str]) -> QMessageBox:
    """The question asked before a re-run replaces ``work`` (not yet shown)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Question)
    box.setWindowTitle("Re-run the transfer?")
    box.setText("The current annotation holds " + "; ".join(work) + ".")
    box.setInformativeText("Carry the manual labels, threshold and niches over onto the new run (cell by "
                           "cell), or start from the new run as it comes? The current run is kept either "
                           "way: compare it with the new one, or show it again.")
    box.carry_button = box.addButton("Carry edits over", QMessageBox.AcceptRole)
    box.discard_button = box.addButton("Discard", QMessageBox.DestructiveRole)
    box.cancel_button = box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(box.carry_button)
    return box


def answer(box: QMessageBox) -> str | None:
    """``CARRY``, ``DISCARD`` or None (cancelled) for the button clicked in ``box``."""
    clicked = box.clickedButton()
    if clicked is box.carry_button:
        return CARRY
    if clicked is box.discard_button:
        return DISCARD
    return None


class RunComparison(QDialog):
    """Run A (the previous run, rows) against run B (the shown one, columns), in cell counts."""

    def __init__(self, previous, current, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Previous run (A) vs shown run (B)")
        self.table, self.agreement = compare_runs(previous, current)
        n = int(self.table.to_numpy().sum())
        self.summary = QLabel(f"{self.agreement:.1%} of {n:,} cells keep their type; rows: run A, "
                              "columns: run B (cells).")
        self.summary.setWordWrap(True)
        grid = self.grid = QTableWidget(*self.table.shape)
        grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
        grid.setHorizontalHeaderLabels([str(c) for c in self.table.columns])
        grid.setVerticalHeaderLabels([str(r) for r in self.table.index])
        for i, row in enumerate(self.table.to_numpy()):
            for j, value in enumerate(row):
                item = QTableWidgetItem(f"{int(value):,}" if value else "")
                if self.table.index[i] == self.table.columns[j]:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                grid.setItem(i, j, item)
        grid.resizeColumnsToContents()
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(grid, 1)
        layout.addLayout(row)
        self.resize(720, 420)


class RerunMixin:
    """Ask before a re-run, carry the work over, keep and compare the previous run (mixed into
    the transfer dock: needs ``session``, ``annotation``, ``status``)."""

    def _build_compare_row(self) -> QHBoxLayout:
        self.compare_button = QPushButton("Compare with previous run…")
        self.compare_button.setToolTip("contingency of the previous run (A) against the shown one (B)")
        self.compare_button.clicked.connect(lambda: self.compare_runs())
        self.swap_button = QPushButton("Show previous run")
        self.swap_button.setToolTip("show the run replaced by the last re-run (the shown one is kept)")
        self.swap_button.clicked.connect(lambda: self.show_previous_run())
        row = QHBoxLayout()
        row.addWidget(self.compare_button)
        row.addWidget(self.swap_button)
        self.session.events.previous_transfer.connect(self._update_compare_buttons)
        self._update_compare_buttons()
        return row

    def _update_compare_buttons(self, *_state) -> None:
        has = self.session.previous_transfer is not None
        self.compare_button.setEnabled(has)
        self.swap_button.setEnabled(has)

    def rerun_choice(self, keep: str | None = None) -> str | None:
        """What to do with the current work before a re-run: ``keep`` if given, else ask (a
        modal question) when there is work; ``CARRY``, ``DISCARD`` or None (cancel)."""
        work = unsaved_work(self.annotation)
        if not work:
            return DISCARD
        if keep in (CARRY, DISCARD):
            return keep
        box = rerun_question(self, work)
        box.exec_()
        return answer(box)

    def compare_runs(self) -> RunComparison | None:
        """Show (non-modal) the contingency of the previous run against the shown one."""
        previous, current = self.session.previous_transfer, self.session.transfer
        if previous is None or current is None:
            self.runner.fail("no previous run to compare with: re-run the transfer first")
            return None
        dialog = RunComparison(previous.annotation, current.annotation, self)
        dialog.show()
        self._comparison = dialog
        return dialog

    def show_previous_run(self) -> None:
        """Swap the shown run and the previous one (both stay in the session)."""
        s = self.session
        if s.previous_transfer is None:
            return
        previous, current = s.previous_transfer, s.transfer
        s.previous_transfer = current
        s.transfer = previous
        self.status.setText("showing the previous run; “Show previous run” swaps back")
