"""Run by tests/test_docks_layout.py under its own Xvfb screen: open the GUI as
``napari-cellama gui`` does, with the demo run and reference, and print the geometry of
the window, its status bar and the transfer dock's Run button as one JSON line."""

from __future__ import annotations

import json
import sys


def rect(widget):
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    return [top_left.x(), top_left.y(), widget.width(), widget.height()]


def main(xenium: str, reference: str, screenshot: str | None = None) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_cellama._cli.gui import open_viewer, settle

    viewer, widgets = open_viewer(xenium, reference=reference, show=True)
    settle(widgets, minimum=2.0, timeout=120.0)
    window = viewer.window._qt_window
    screen = QApplication.primaryScreen().availableGeometry()
    transfer = widgets["2. Transfer, review and export"]
    transfer.dock_widget().raise_()
    QApplication.processEvents()
    transfer.scroll_area.ensureWidgetVisible(transfer.run_button)
    QApplication.processEvents()
    status = window.statusBar()
    out = {
        "screen": [screen.x(), screen.y(), screen.width(), screen.height()],
        "window": [window.frameGeometry().x(), window.frameGeometry().y(),
                   window.frameGeometry().width(), window.frameGeometry().height()],
        "status_bar": rect(status), "status_visible": status.isVisible(),
        "run_button": rect(transfer.run_button), "run_visible": transfer.run_button.isVisible(),
        "scrolling": {name: w.scroll_area is not None for name, w in widgets.items()},
        "tabbed": {name: len(window.tabifiedDockWidgets(w.dock_widget())) for name, w in widgets.items()},
        "ready": transfer.run_button.isEnabled(),
    }
    plots = widgets["Plots"]
    out["plots"] = rect(plots.dock_widget())
    if screenshot:
        viewer.screenshot(screenshot, canvas_only=False)
    print("LAYOUT " + json.dumps(out), flush=True)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
