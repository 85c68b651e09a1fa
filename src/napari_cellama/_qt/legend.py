"""The one legend widget, for cell types and for niches.

:class:`CategoryLegend`: one row per category with a check box (show / hide it on the
tissue), a colour swatch, the name, the number of cells and an optional extra column (the
top markers of a niche); "Show only selected" and "Show all" buttons. It emits
``visibility_changed(hidden names)`` when the user ticks or unticks rows, ``row_clicked(name)``
on a click and ``row_activated(name)`` on a double click; it never computes anything itself.

:class:`TypeLegend` binds it to an :class:`~napari_cellama.core.Annotation`: rows follow
the annotation's types, colours, counts and visibility (its named signals), and ticking
rows changes the annotation's visibility, which the ``cell types`` layer follows. A row's
context menu (right click) renames the type (:meth:`~napari_cellama.core.Annotation.rename_type`)
or gives it another colour (a colour dialog; the session's shared palette carries both to
every layer, legend and export). The niche
dock uses :class:`CategoryLegend` itself and applies the hidden set to its layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.palette import to_hex
from ..validators import CellamaInputError


def swatch(color) -> QIcon:
    """A 14-pixel square icon of ``color`` (RGBA floats or hex)."""
    pm = QPixmap(14, 14)
    pm.fill(QColor(to_hex(color)))
    return QIcon(pm)


class CategoryLegend(QWidget):
    """Rows of categories: tick to show, click / double-click to act (see the module docstring)."""

    visibility_changed = Signal(object)
    """Emitted with the set of hidden names after the user ticks or unticks rows."""
    row_clicked = Signal(str)
    """Emitted with a row's name when the row is clicked."""
    row_activated = Signal(str)
    """Emitted with a row's name when the row is double-clicked."""

    def __init__(self, title: str, headers: Iterable[str] = ("name", "cells"),
                 label: Callable[[str], str] = str, parent=None):
        super().__init__(parent)
        self._label = label
        headers = list(headers)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(headers))
        self.tree.setHeaderLabels(headers)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SingleSelection)
        header = self.tree.header()
        header.setStretchLastSection(len(headers) > 2)
        if len(headers) == 2:  # the name takes the width (long labels stay readable), counts fit
            header.setSectionResizeMode(0, QHeaderView.Stretch)
            header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.itemChanged.connect(self._on_item_changed)
        self.tree.itemClicked.connect(lambda item, _col: self.row_clicked.emit(item.data(0, Qt.UserRole)))
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.row_activated.emit(item.data(0, Qt.UserRole)))
        self.only_button = QPushButton("Show only selected")
        self.only_button.clicked.connect(self.show_only_selected)
        self.all_button = QPushButton("Show all")
        self.all_button.clicked.connect(self._show_all)
        buttons = QHBoxLayout()
        buttons.addWidget(self.only_button)
        buttons.addWidget(self.all_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(title)
        self.title.setWordWrap(True)  # a long hint never widens the dock
        layout.addWidget(self.title)
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        self._updating = False

    # ------------------------------------------------------------------ rows
    def set_rows(self, names, counts: Mapping, colors: Mapping, extra: Mapping | None = None,
                 hidden: Iterable[str] = ()) -> None:
        """Show ``names`` with their counts, colours, optional extra text and check states.

        Rows are updated in place; the tree is rebuilt only when the names change (rebuilding
        from inside a row's own change signal would delete the row Qt is still working on).
        """
        names = [str(n) for n in names]
        hidden = {str(h) for h in hidden}
        self._updating = True
        if names != self.names():
            selected = self.selected()
            self.tree.clear()
            for name in names:
                item = QTreeWidgetItem([self._label(name)] + [""] * (self.tree.columnCount() - 1))
                item.setData(0, Qt.UserRole, name)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(0, Qt.Checked)
                item.setTextAlignment(1, Qt.AlignRight)
                self.tree.addTopLevelItem(item)
                item.setSelected(name == selected)
        for i, name in enumerate(names):
            item = self.tree.topLevelItem(i)
            item.setText(1, str(int(counts.get(name, 0))))
            if extra is not None and self.tree.columnCount() > 2:
                item.setText(2, extra.get(name, ""))
            item.setIcon(0, swatch(colors[name]))
            state = Qt.Unchecked if name in hidden else Qt.Checked
            if item.checkState(0) != state:
                item.setCheckState(0, state)
        if self.tree.columnCount() > 2:
            for col in range(2):
                self.tree.resizeColumnToContents(col)
        self._updating = False

    def names(self) -> list[str]:
        return [self.tree.topLevelItem(i).data(0, Qt.UserRole) for i in range(self.tree.topLevelItemCount())]

    def item(self, name: str):
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if it.data(0, Qt.UserRole) == name:
                return it
        return None

    def hidden(self) -> set[str]:
        return {
            self.tree.topLevelItem(i).data(0, Qt.UserRole)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).checkState(0) != Qt.Checked
        }

    # ------------------------------------------------------------------ selection of a row
    def selected(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.UserRole) if items else None

    def select(self, name: str) -> None:
        it = self.item(name)
        if it is not None:
            self.tree.clearSelection()
            it.setSelected(True)
            self.tree.scrollToItem(it)

    # the names the type legend has always had
    selected_type = selected
    select_type = select

    # ------------------------------------------------------------------ visibility
    def set_checked(self, name: str, visible: bool) -> None:
        """Tick or untick a row (as a click on its check box does)."""
        it = self.item(name)
        if it is not None:
            it.setCheckState(0, Qt.Checked if visible else Qt.Unchecked)

    def set_hidden(self, hidden) -> None:
        """Untick exactly ``hidden`` (as the user would), then emit ``visibility_changed`` once."""
        hidden = {str(h) for h in hidden}
        self._updating = True
        for name in self.names():
            self.item(name).setCheckState(0, Qt.Unchecked if name in hidden else Qt.Checked)
        self._updating = False
        self.visibility_changed.emit(self.hidden())

    def show_only_selected(self) -> None:
        name = self.selected()
        if name is not None:
            self.set_hidden(set(self.names()) - {name})

    def _show_all(self) -> None:
        self.set_hidden(())

    def _on_item_changed(self, item, column: int) -> None:
        if not self._updating and column == 0:
            self.visibility_changed.emit(self.hidden())


class TypeLegend(CategoryLegend):
    """A :class:`CategoryLegend` of the types of an :class:`~napari_cellama.core.Annotation`."""

    def __init__(self, parent=None, title: str = "Legend (tick to show, double-click to select its cells, "
                                                  "right-click to rename or recolour)"):
        super().__init__(title, ("type", "cells"), parent=parent)
        self.tree.setMinimumHeight(140)
        self.annotation = None
        self.message = ""
        """The last rename / recolour problem (empty when it worked)."""
        self.visibility_changed.connect(self._apply_hidden)
        self.tree.setContextMenuPolicy(Qt.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)

    # ------------------------------------------------------------------ rename / recolour
    def _context_menu(self, pos) -> None:
        item = self.tree.itemAt(pos)
        if item is None or self.annotation is None:
            return
        name = item.data(0, Qt.UserRole)
        menu = self.row_menu(name)
        menu.exec_(self.tree.viewport().mapToGlobal(pos))

    def row_menu(self, name: str) -> QMenu:
        """The context menu of a row: rename, change colour, select its cells."""
        from .._constants import UNASSIGNED, UNKNOWN

        menu = QMenu(self)
        rename = menu.addAction(f"Rename “{name}”…", lambda: self.ask_rename(name))
        rename.setEnabled(name not in (UNASSIGNED, UNKNOWN))
        recolour = menu.addAction("Change colour…", lambda: self.ask_color(name))
        recolour.setEnabled(name != UNASSIGNED)
        menu.addAction("Select its cells", lambda: self.row_activated.emit(name))
        return menu

    def ask_rename(self, name: str) -> str | None:
        new, ok = QInputDialog.getText(self, "Rename cell type", f"New name for “{name}”:", text=name)
        return self.rename_type(name, new) if ok else None

    def ask_color(self, name: str):
        color = QColorDialog.getColor(QColor(to_hex(self.annotation.color_of(name))), self,
                                      f"Colour of “{name}”")
        return self.recolor_type(name, color.name()) if color.isValid() else None

    def rename_type(self, old: str, new: str) -> str | None:
        """Rename a type everywhere (as the context menu does); None (and :attr:`message`) on bad input."""
        try:
            name = self.annotation.rename_type(old, new)
        except CellamaInputError as err:
            self.message = str(err)
            self.title.setToolTip(self.message)
            return None
        self.message = ""
        self.select(name)
        return name

    def recolor_type(self, name: str, color) -> str | None:
        """Give a type another colour (``#rrggbb``) in every layer (as the colour dialog does)."""
        try:
            self.annotation.set_color(name, color)
        except CellamaInputError as err:
            self.message = str(err)
            return None
        self.message = ""
        return to_hex(self.annotation.color_of(name))

    def set_annotation(self, annotation) -> None:
        from ._wiring import rewire

        handlers = {name: self.refresh for name in ("labels_changed", "types_changed", "colors_changed",
                                                     "visibility_changed")}
        rewire(self.annotation, annotation, handlers)
        self.annotation = annotation
        self.refresh()

    def refresh(self, *_cause) -> None:
        """Bring rows up to date with the annotation (names, colours, counts, visibility)."""
        ann = self.annotation
        if ann is None:
            self.set_rows([], {}, {})
            return
        self.set_rows(ann.categories, ann.counts(include_empty=True), ann.colors, hidden=ann.hidden)

    def _apply_hidden(self, hidden: set) -> None:
        ann = self.annotation
        if ann is None or hidden == set(ann.hidden):
            return
        changed = hidden ^ set(ann.hidden)
        if not hidden:
            ann.show_all()
        elif len(changed) == 1:
            name = next(iter(changed))
            ann.set_visible(name, name not in hidden)
        else:
            ann.show_only(set(ann.categories) - hidden)
