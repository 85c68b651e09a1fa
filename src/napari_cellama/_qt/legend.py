"""Legend of an :class:`~napari_cellama.core.Annotation`: one row per type.

Each row: a check box (show / hide the type on the tissue), a colour swatch, the name and
the number of cells. Clicking a row's name selects it (the "show only" and "select cells"
buttons act on the selected row). The legend listens to the annotation and redraws
counts after threshold changes and edits; it never recomputes anything itself.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.palette import to_hex


def _swatch(color) -> QIcon:
    pm = QPixmap(14, 14)
    pm.fill(QColor(to_hex(color)))
    return QIcon(pm)


class LegendWidget(QWidget):
    """Type legend with per-type toggles, "show only" and "show all"."""

    type_activated = Signal(str)
    """Emitted with a type name when its row is double-clicked."""

    def __init__(self, parent=None, title: str = "Legend (tick to show, double-click to select its cells)"):
        super().__init__(parent)
        self.annotation = None
        self.title = QLabel(title)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["type", "cells"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        self.tree.setMinimumHeight(140)
        # the name column takes the width (long reference labels stay readable), counts fit
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.itemChanged.connect(self._on_item_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.type_activated.emit(item.data(0, Qt.UserRole)))
        self.only_button = QPushButton("Show only selected")
        self.only_button.clicked.connect(self.show_only_selected)
        self.all_button = QPushButton("Show all")
        self.all_button.clicked.connect(self._show_all)
        buttons = QHBoxLayout()
        buttons.addWidget(self.only_button)
        buttons.addWidget(self.all_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        self._updating = False

    def set_annotation(self, annotation) -> None:
        from ._wiring import rewire

        handlers = {name: self.refresh for name in ("labels_changed", "types_changed", "colors_changed",
                                                     "visibility_changed")}
        rewire(self.annotation, annotation, handlers)
        self.annotation = annotation
        self.refresh()

    def refresh(self, *_cause) -> None:
        """Bring rows up to date with the annotation (names, colours, counts, visibility).

        Rows are updated in place; the tree is rebuilt only when the list of types
        changes. (Rebuilding from inside a row's own change signal would delete the row
        Qt is still working on.)
        """
        ann = self.annotation
        names = list(ann.categories) if ann is not None else []
        if names != self.names():
            self._rebuild(names)
        if ann is None:
            return
        self._updating = True
        counts = ann.counts(include_empty=True)
        for i, name in enumerate(names):
            item = self.tree.topLevelItem(i)
            item.setText(1, str(int(counts.get(name, 0))))
            item.setIcon(0, _swatch(ann.color_of(name)))
            state = Qt.Checked if ann.is_visible(name) else Qt.Unchecked
            if item.checkState(0) != state:
                item.setCheckState(0, state)
        self._updating = False

    def _rebuild(self, names: list[str]) -> None:
        self._updating = True
        selected = self.selected_type()
        self.tree.clear()
        for name in names:
            item = QTreeWidgetItem([name, ""])
            item.setData(0, Qt.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(0, Qt.Checked)
            item.setTextAlignment(1, Qt.AlignRight)
            self.tree.addTopLevelItem(item)
            if name == selected:
                item.setSelected(True)
        self._updating = False

    def item(self, name: str):
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if it.data(0, Qt.UserRole) == name:
                return it
        return None

    def names(self) -> list[str]:
        return [self.tree.topLevelItem(i).data(0, Qt.UserRole) for i in range(self.tree.topLevelItemCount())]

    def selected_type(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.UserRole) if items else None

    def select_type(self, name: str) -> None:
        it = self.item(name)
        if it is not None:
            self.tree.clearSelection()
            it.setSelected(True)

    def set_checked(self, name: str, visible: bool) -> None:
        """Tick or untick a type (as a click on its check box does)."""
        it = self.item(name)
        if it is not None:
            it.setCheckState(0, Qt.Checked if visible else Qt.Unchecked)

    def show_only_selected(self) -> None:
        name = self.selected_type()
        if self.annotation is not None and name is not None:
            self.annotation.show_only(name)

    def _show_all(self) -> None:
        if self.annotation is not None:
            self.annotation.show_all()

    def _on_item_changed(self, item, column: int) -> None:
        if self._updating or column != 0 or self.annotation is None:
            return
        name = item.data(0, Qt.UserRole)
        visible = item.checkState(0) == Qt.Checked
        if self.annotation.is_visible(name) != visible:
            self.annotation.set_visible(name, visible)
