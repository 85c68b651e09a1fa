"""Prototype labels as the shown annotation, alone or filling the transfer's Unknown cells.

A box of the "Marker prototypes" dock. It never draws anything itself: it writes the
session's ``transfer`` field (:class:`~napari_cellama.session.TransferState`), and the
transfer dock, the plots and every other dock show that annotation - legend with counts,
threshold slider (on the prototype confidence), the same selection / assign / undo review
tools, exports (each cell's ``label_source``: ``prototypes``, ``transfer:<method>`` or
``manual:<reason>``).

* **Review prototype labels as the annotation**: an
  :class:`~napari_cellama.core.Annotation` of the prototype run
  (:func:`~napari_cellama.core.combine.prototype_table`).
* **Use prototype labels where the transfer says Unknown** (check box; the combo widens it
  to Unassigned cells and cells below the threshold):
  :func:`~napari_cellama.core.combine_annotations` of the transfer the user ran and the
  prototype run; unticking shows the transfer again.
* **Back to the transfer**: shows the transfer again.

The transfer itself is never lost: the box keeps the last annotation it did not make
(the transfer) and brings it back. Manual labels travel: a transfer's manual labels are
carried into the prototype / combined annotation and labels set there are carried back
(``reason="carried"`` when they were not already there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QCheckBox, QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from .._constants import (
    CELL_ID,
    COMBINE_WHERE_UNASSIGNED,
    COMBINE_WHERE_UNKNOWN,
    LABEL_SOURCE,
    LABEL_SOURCE_PROTOTYPES,
    SOURCE,
    SOURCE_MANUAL,
    UNKNOWN,
)
from ..validators import CellamaInputError
from .selection_view import cells_layer

COMBINE_TEXT = "Use prototype labels where the transfer says Unknown"
CARRIED = "carried"


class PrototypeAnnotationBox(QGroupBox):
    """Make the prototype run (or transfer + prototypes) the session's shown annotation."""

    def __init__(self, viewer, session, parent=None):
        super().__init__("Use the prototype labels", parent)
        self.viewer = viewer
        self.session = session
        self._base = None  # the last shown TransferState this box did not make (the transfer)
        self._own: list = []  # annotations this box made (compared by identity)

        self.review_button = QPushButton("Review prototype labels as the annotation")
        self.review_button.setToolTip("legend, threshold, review and export of the prototype labels in "
                                      "“2. Transfer, review and export”; the transfer is kept")
        self.review_button.clicked.connect(lambda: self.show_prototypes())
        self.combine_check = QCheckBox(COMBINE_TEXT)
        self.combine_check.setToolTip("keep the transfer's labels and take the prototype label of each cell "
                                      "the transfer could not name (label_source says which, per cell)")
        self.combine_check.toggled.connect(self.set_combined)
        self.where_combo = QComboBox()
        self.where_combo.addItem("cells the transfer calls Unknown", COMBINE_WHERE_UNKNOWN)
        self.where_combo.addItem("Unknown, Unassigned and below-threshold cells", COMBINE_WHERE_UNASSIGNED)
        self.where_combo.currentIndexChanged.connect(lambda _i: self._recombine())
        self.back_button = QPushButton("Back to the transfer")
        self.back_button.clicked.connect(lambda: self.show_transfer())
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.review_button)
        lay.addWidget(self.combine_check)
        row = QHBoxLayout()
        row.addWidget(QLabel("where:"))
        row.addWidget(self.where_combo, 1)
        lay.addLayout(row)
        lay.addWidget(self.back_button)
        lay.addWidget(self.note)

        session.events.transfer.connect(self._on_transfer)
        session.events.prototypes.connect(self._on_prototypes)
        self._on_transfer(session.transfer)

    # ------------------------------------------------------------------ state
    @property
    def transfer_state(self):
        """The transfer this box falls back to (None before any transfer)."""
        return self._base

    def showing(self) -> str:
        """What the session shows: ``"transfer"``, ``"prototypes"``, ``"combined"`` or ``"none"``."""
        state = self.session.transfer
        if state is None:
            return "none"
        if not self._is_own(state.annotation):
            return "transfer"
        return "combined" if state.result is not self.session.prototypes else "prototypes"

    def _is_own(self, annotation) -> bool:
        return any(a is annotation for a in self._own)

    def _on_transfer(self, state) -> None:
        if state is None:
            self._base = None
        elif not self._is_own(state.annotation):
            self._base = state  # a transfer run / opened session: the one to come back to
            self._own.clear()
            self.combine_check.blockSignals(True)
            self.combine_check.setChecked(False)
            self.combine_check.blockSignals(False)
        self._update()

    def _on_prototypes(self, _result) -> None:
        if self.combine_check.isChecked():
            self._recombine()
        elif self.showing() == "prototypes":
            self.show_prototypes()
        self._update()

    def _update(self) -> None:
        has_p = self.session.prototypes is not None
        has_t = self._base is not None
        self.review_button.setEnabled(has_p)
        self.combine_check.setEnabled(has_p and has_t)
        self.back_button.setEnabled(has_t and self.showing() in ("prototypes", "combined"))
        shown = self.showing()
        ann = self.session.annotation
        if shown == "prototypes":
            text = f"Shown: the prototype labels of {ann.n_cells:,} cells (legend, review, export in dock 2)."
        elif shown == "combined":
            src = ann.label_source
            n_p = int((src == LABEL_SOURCE_PROTOTYPES).sum())
            n_unknown = int((ann.cell_type.astype(str) == UNKNOWN).sum())
            text = (f"Shown: the transfer, with prototype labels for {n_p:,} of {ann.n_cells:,} cells "
                    f"(label_source 'prototypes'); {n_unknown:,} cells still Unknown.")
        elif not has_p:
            text = "Assign cell types first."
        elif not has_t:
            text = "Run a transfer (dock 2) to combine it with the prototype labels."
        else:
            text = "Shown: the transfer."
        self.note.setText(text)

    # ------------------------------------------------------------------ actions
    def show_prototypes(self):
        """Show the prototype run as the annotation; returns it (None when there is none)."""
        from ..core.run_annotations import prototype_annotation
        from ..session import TransferState

        result = self.session.prototypes
        if result is None:
            self.note.setText("Assign cell types first.")
            return None
        ann = prototype_annotation(result, self._inputs(), label_ids=self._label_ids(result.table.index),
                                   palette=self.session.type_colors)
        if self._base is not None:
            carry_manual_labels(self._base.annotation, ann)
        self._show(TransferState(result, ann))
        return ann

    def set_combined(self, on: bool = True):
        """Tick (or untick) “use prototype labels where the transfer says Unknown”."""
        if self.combine_check.isChecked() != bool(on):
            self.combine_check.setChecked(bool(on))  # comes back here through toggled
            return self.session.annotation
        if not on:
            self.show_transfer()
            return self.session.annotation
        try:
            return self._recombine()
        except CellamaInputError as err:
            self.note.setText(f"cannot combine: {err}")
            self.combine_check.blockSignals(True)
            self.combine_check.setChecked(False)
            self.combine_check.blockSignals(False)
            return None

    def _recombine(self):
        from ..core.run_annotations import combined_annotation
        from ..session import TransferState

        if not self.combine_check.isChecked():
            return None
        base, proto = self._base, self.session.prototypes
        if base is None or proto is None:
            raise CellamaInputError("run a transfer and assign cell types by prototypes first")
        shown = self.session.annotation
        b = base.annotation
        where = self.where_combo.currentData()
        params = getattr(base.result, "params", None) or {}
        ann = combined_annotation(b, proto, where, method=params.get("method"), inputs=self._inputs(),
                                  palette=self.session.type_colors)
        if shown is not None and self._is_own(shown):
            carry_manual_labels(shown, ann)  # edits made on the previous combination
        self._show(TransferState(base.result, ann))
        return ann

    def _inputs(self) -> dict:
        """The inputs of the prototype run (the query run) for its provenance step."""
        root = self.session.xenium_root
        return {"query": str(root)} if root is not None else {}

    def show_transfer(self):
        """Show the transfer again (manual labels set meanwhile are carried onto it)."""
        shown = self.session.annotation
        if self._base is None:
            return None
        if shown is not None and self._is_own(shown):
            carry_manual_labels(shown, self._base.annotation)
        self.combine_check.blockSignals(True)
        self.combine_check.setChecked(False)
        self.combine_check.blockSignals(False)
        self.session.transfer = self._base
        self._update()
        return self._base.annotation

    def _show(self, state) -> None:
        self._own.append(state.annotation)
        del self._own[:-2]  # the shown one and the one it replaces
        self.session.transfer = state
        self._update()

    def _label_ids(self, cell_ids: pd.Index):
        """Labels-raster id of each cell: the session's query, else the cells layer's features."""
        ids = pd.Index(cell_ids.astype(str))
        of = self.session.label_of_cell.reindex(ids)
        if len(ids) and of.notna().all():
            return of.to_numpy(np.int64)
        cells = cells_layer(self.viewer, self.session)
        if cells is None or CELL_ID not in cells.features:
            return None
        feats = cells.features
        of = pd.Series(feats["index"].to_numpy(np.int64), index=feats[CELL_ID].astype(str)).reindex(ids)
        return of.to_numpy(np.int64) if of.notna().all() else None


def carry_manual_labels(source, target) -> int:
    """Set on ``target`` the manual labels of ``source`` it lacks (same cell ids), keeping each
    reason; returns the number of cells changed (each (type, reason) group is one edit)."""
    t = source.table
    manual = t[t[SOURCE].astype(str) == SOURCE_MANUAL]
    if manual.empty:
        return 0
    manual = manual[manual.index.isin(target.cell_ids)]
    current = target.table.reindex(manual.index)
    differs = (current[SOURCE].astype(str) != SOURCE_MANUAL) | (
        current["cell_type"].astype(str) != manual["cell_type"].astype(str))
    manual = manual[differs.to_numpy()]
    reasons = manual[LABEL_SOURCE].astype(str).str.split(":", n=1).str[-1]
    n = 0
    for (cell_type, reason), ids in manual.groupby([manual["cell_type"].astype(str), reasons]).groups.items():
        target.assign(list(ids), cell_type, reason=reason or CARRIED)
        n += len(ids)
    return n
