"""The review-queue part of the "4. Review" dock: walk the most uncertain cells with keys.

The queue (:class:`~napari_cellama.core.review_queue.ReviewQueue`) orders the cells by
uncertainty; next / previous centre the camera on the cell, select it (its outline and
evidence follow) and show the count of reviewed / remaining cells. Accept, reassign and
Unknown are annotation edits (undoable) that also mark the cell reviewed, then move on.
Keys (bound in the viewer while the dock is open; see :data:`QUEUE_KEYS`).
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

QUEUE_KEYS = {
    "next": ".",
    "previous": ",",
    "accept": "Shift-K",
    "reassign": "Shift-R",
    "unknown": "Shift-U",
    "undo": "Shift-Z",
}
"""Viewer key bindings of the queue: ``.`` next, ``,`` previous, ``Shift+K`` accept (keep),
``Shift+R`` reassign to the chosen type (default: the runner-up), ``Shift+U`` Unknown,
``Shift+Z`` undo the last edit. None of them is a key of napari's Labels layer or viewer."""

ALL_LABELS = "all labels"
GROUP_MICRONS = 30.0
"""Reach (µm) of a group around its most uncertain cell when the queue walks in groups."""


class QueuePanel(QWidget):
    """Filters, counts and buttons of the review queue (the dock does the walking)."""

    filters_changed = Signal()
    action = Signal(str)
    """One of the keys of :data:`QUEUE_KEYS`."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label_combo = QComboBox()
        self.label_combo.addItem(ALL_LABELS)
        self.label_combo.currentTextChanged.connect(lambda _t: self.filters_changed.emit())
        self.region_check = QCheckBox("only the selected cells (region)")
        self.region_check.setToolTip("select a region first (polygons, a niche, a legend row), then tick")
        self.region_check.toggled.connect(lambda _b: self.filters_changed.emit())
        self.below_spin = QDoubleSpinBox()
        self.below_spin.setRange(0.0, 1.0)
        self.below_spin.setSingleStep(0.05)
        self.below_spin.setValue(1.0)
        self.below_spin.setToolTip("only cells whose confidence is below this (1.00: every cell)")
        self.below_spin.valueChanged.connect(lambda _v: self.filters_changed.emit())
        self.group_check = QCheckBox(f"in small groups ({GROUP_MICRONS:.0f} µm)")
        self.group_check.setToolTip(f"walk groups of neighbouring uncertain cells: the most uncertain cell and the "
                                    f"queue's cells within {GROUP_MICRONS:.0f} µm of it; the camera moves once per "
                                    "group, only the ring moves within it")
        self.group_check.toggled.connect(lambda _b: self.filters_changed.emit())
        form = QFormLayout()
        form.addRow("label", self.label_combo)
        form.addRow("confidence below", self.below_spin)
        form.addRow("", self.region_check)
        form.addRow("", self.group_check)
        self.count_label = QLabel("no queue yet")
        self.count_label.setWordWrap(True)
        self.current_label = QLabel("")
        self.current_label.setWordWrap(True)
        keys = {k: v.replace("Shift-", "Shift+") for k, v in QUEUE_KEYS.items()}
        self.buttons = {}
        row = QHBoxLayout()
        for name, text in (("previous", "◀ Prev."), ("next", "Next ▶"), ("accept", "Accept"),
                           ("reassign", "Reassign"), ("unknown", "Unknown")):
            b = QPushButton(f"{text} [{keys[name]}]")
            b.clicked.connect(lambda _c=False, n=name: self.action.emit(n))
            self.buttons[name] = b
            row.addWidget(b) if name in ("previous", "next") else None
        row2 = QHBoxLayout()
        for name in ("accept", "reassign", "unknown"):
            row2.addWidget(self.buttons[name])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.count_label)
        layout.addLayout(row)
        layout.addLayout(row2)
        layout.addWidget(self.current_label)
        help_label = QLabel(f"keys in the viewer: {keys['next']} next, {keys['previous']} previous, "
                            f"{keys['accept']} accept, {keys['reassign']} reassign (type chosen below), "
                            f"{keys['unknown']} Unknown, {keys['undo']} undo")
        help_label.setWordWrap(True)
        layout.addWidget(help_label)

    def set_labels(self, labels) -> None:
        current = self.label_combo.currentText()
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        self.label_combo.addItems([ALL_LABELS] + [str(t) for t in labels])
        self.label_combo.setCurrentText(current if current else ALL_LABELS)
        self.label_combo.blockSignals(False)

    @property
    def label(self) -> str | None:
        t = self.label_combo.currentText()
        return None if t in ("", ALL_LABELS) else t

    @property
    def below(self) -> float | None:
        v = float(self.below_spin.value())
        return None if v >= 1.0 else v
