"""The base of every napari-cellama dock: the viewer it serves, that viewer's session, and a
layout that fits any screen.

* **Scrolling.** When napari docks it (or the first time it is shown) the dock's form
  moves into a frameless scroll area (:meth:`SessionDock.install_scrolling`): the dock's minimum height no longer adds up
  into the window's, so a window with every dock open still fits a 1366x768 screen, and a
  long form (Run transfer, the legend, exports) stays reachable by scrolling. A dock that
  already scrolls its own form (the fine-tune dock, Run pinned below it) is left as it is.
* **Tabs.** A dock put next to another napari-cellama dock in the same area (the ``gui``
  command, or a dock opened from the Plugins menu) is tabbed with it
  (:meth:`SessionDock.tab_with_siblings`) instead of being stacked under it.
* **Closing.** ``detached`` is True once napari took the dock out of its window (the title
  bar's close button). A dock whose job still runs stays alive until the job ends
  (:meth:`track_jobs`, which also lists it in ``session.running``), so the job finishes into
  the session; then the dock lets go of the session (:meth:`release`).
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget

_BUSY_DOCKS: set = set()
"""Docks taken out of the window whose job still runs (kept alive until it ends)."""


class SessionDock(QWidget):
    """A dock widget bound to ``napari_viewer`` and its :class:`~napari_cellama.session.CellamaSession`
    (``self.viewer``, ``self.session``): docks read and write the session, never each other."""

    def __init__(self, napari_viewer):
        super().__init__()
        from ..session import get_session

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.scroll_area: QScrollArea | None = None
        """The scroll area holding the dock's form once shown (None before)."""
        self.detached = False
        """True once napari took this dock out of its window (closed)."""

    # ------------------------------------------------------------------ layout
    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.install_scrolling()
        super().showEvent(event)
        QTimer.singleShot(0, self.tab_with_siblings)

    def install_scrolling(self) -> QScrollArea | None:
        """Move the dock's form into a vertically scrolling area (once); returns the area."""
        if self.scroll_area is not None or self.layout() is None:
            return self.scroll_area
        own = _own_scroll_area(self.layout())
        if own is not None:  # the dock scrolls its form itself (its Run button pinned below it)
            self.scroll_area = own
            return own
        inner = QWidget()
        inner.setObjectName("cellama_dock_form")
        inner.setLayout(self.layout())  # Qt moves the layout and its widgets to ``inner``
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
        area.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(area)
        self.scroll_area = area
        self.updateGeometry()
        dock = self.dock_widget()
        if dock is not None:  # the dock's minimum was computed from the unscrolled form
            dock.setMinimumSize(50, 50)
            if dock.layout() is not None:
                dock.layout().invalidate()
            dock.updateGeometry()
        return area

    def dock_widget(self) -> QDockWidget | None:
        """The napari dock holding this widget (None when not docked)."""
        parent = self.parentWidget()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        return parent

    def tab_with_siblings(self) -> bool:
        """Tab this dock with the other napari-cellama docks of its area (True if it was tabbed)."""
        try:
            dock = self.dock_widget()
        except RuntimeError:  # deleted meanwhile
            return False
        if dock is None or dock.isFloating():
            return False
        window = dock.parentWidget()
        if not isinstance(window, QMainWindow) or window.tabifiedDockWidgets(dock):
            return False
        area = window.dockWidgetArea(dock)
        siblings = [d for d in window.findChildren(QDockWidget)
                    if d is not dock and not d.isHidden() and not d.isFloating()
                    and window.dockWidgetArea(d) == area and _is_plugin_dock(d)]
        if not siblings:
            return False
        window.tabifyDockWidget(siblings[-1], dock)
        dock.show()
        dock.raise_()
        return True

    # ------------------------------------------------------------------ closing
    def event(self, event) -> bool:
        if event.type() == QEvent.ParentChange:
            if self.parentWidget() is not None:
                self._docked = True
                if isinstance(self.parentWidget(), QDockWidget):  # napari docks it: scroll from the
                    self.install_scrolling()  # start, so the window never grows to the whole form
            else:
                self.detached = getattr(self, "_docked", False)
                runner = getattr(self, "_tracked_runner", None)
                if self.detached and (runner is None or not runner.busy):
                    self.release()
        return super().event(event)

    def track_jobs(self, runner) -> None:
        """Record ``runner``'s jobs (this dock's :class:`~._runner.JobRunner`) in
        ``session.running`` while they run, and keep this dock alive until its job ends even
        after napari closed it, so the job's result reaches the session."""
        names: list = []

        def started(what: str) -> None:
            names.append(what)
            _BUSY_DOCKS.add(self)
            self.session.job_started(what)

        def finished() -> None:
            while names:
                self.session.job_finished(names.pop())
            _BUSY_DOCKS.discard(self)
            if self.detached:
                self.release()

        runner.started.connect(started)
        runner.finished.connect(finished)
        self._tracked_runner = runner

    def release(self) -> None:
        """Stop following the session (a closed dock whose job has ended); docks override it
        to disconnect their handlers."""


def _is_plugin_dock(dock: QDockWidget) -> bool:
    """A dock of this plugin: a :class:`SessionDock`, or any widget napari docked for it."""
    return isinstance(dock.widget(), SessionDock) or dock.windowTitle().endswith("(napari-cellama)")


def _own_scroll_area(layout) -> QScrollArea | None:
    """A scroll area placed directly in ``layout`` by the dock itself (None if none)."""
    for i in range(layout.count()):
        widget = layout.itemAt(i).widget()
        if isinstance(widget, QScrollArea):
            return widget
    return None
