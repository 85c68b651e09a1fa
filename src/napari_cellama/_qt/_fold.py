"""Layout helpers: a foldable section (an arrow button that shows or hides a box of
parameters), a scrolling area for long forms in a docked panel, a path row with a browse button."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QLayout, QScrollArea, QToolButton, QWidget


def fold_button(text: str, box: QWidget, expanded: bool) -> QToolButton:
    """A flat checkable arrow button folding ``box`` away (unchecked) or unfolding it (checked)."""
    button = QToolButton()
    button.setText(text)
    button.setCheckable(True)
    button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
    button.setStyleSheet("QToolButton { border: none; }")
    button.toggled.connect(lambda visible: set_unfolded(button, box, visible))
    set_unfolded(button, box, expanded)
    return button


def set_unfolded(button: QToolButton, box: QWidget, visible: bool) -> None:
    """Show or hide ``box`` and keep ``button``'s arrow and checked state in step."""
    box.setVisible(visible)
    button.setArrowType(Qt.DownArrow if visible else Qt.RightArrow)
    if button.isChecked() != visible:
        button.blockSignals(True)
        button.setChecked(visible)
        button.blockSignals(False)


def scrolling(layout: QLayout) -> QScrollArea:
    """``layout`` in a frameless, vertically scrolling area: a long form stays usable when its
    dock shares the window's height with other docks."""
    inner = QWidget()
    inner.setLayout(layout)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setWidget(inner)
    return area


MARKER_FILES = "Markers (*.csv *.tsv *.json *.gmt)"


def path_row(edit, title: str, file_filter: str | None = None, on_pick=None) -> QWidget:
    """A line edit for a path with a "..." button opening a file dialog (``file_filter``) or,
    without a filter, a folder dialog; ``on_pick()`` runs after a path was chosen."""
    from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton

    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    btn = QPushButton("...")

    def pick() -> None:
        if file_filter is None:
            path = QFileDialog.getExistingDirectory(row, title)
        else:
            path, _ = QFileDialog.getOpenFileName(row, title, "", file_filter)
        if path:
            edit.setText(path)
            if on_pick is not None:
                on_pick()

    btn.clicked.connect(pick)
    lay.addWidget(btn)
    return row
