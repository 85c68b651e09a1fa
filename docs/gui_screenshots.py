"""Make the layout screenshots of docs/walkthrough.md (docs/images/gui_1920x1080.png, gui_1366x768.png).

    NAPARI_CELLAMA_CACHE=/work/cache python docs/gui_screenshots.py

For each screen size, ``napari-cellama gui --demo`` (:func:`napari_cellama._cli.gui.open_viewer`)
is opened on its own Xvfb screen of that size (a subprocess: the screen is the size asked for),
the transfer is run (real model), the transfer dock is put in front and the Plots dock shows
the composition; then the window is photographed and its geometry checked: the window, the
status bar, Run transfer, the confidence histogram and the legend (with its wrapped hint) on
screen, no dock wider than the screen allows. One JSON line per size is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = ("1920x1080", "1366x768")


def _rect(widget):
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    return [top_left.x(), top_left.y(), widget.width(), widget.height()]


def _inside(rect, screen) -> bool:
    x, y, w, h = rect
    sx, sy, sw, sh = screen
    return x >= sx and y >= sy and x + w <= sx + sw and y + h <= sy + sh


def child(size: str) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_cellama._cli.gui import open_viewer, settle
    from napari_cellama._qt.confidence_histogram import ConfidenceHistogram

    viewer, widgets = open_viewer(demo=True, show=True)
    settle(widgets, minimum=2.0, timeout=300.0)
    transfer = widgets["2. Transfer, review and export"]
    transfer.run(sync=True)
    settle(widgets, minimum=2.0, timeout=300.0)
    transfer.dock_widget().raise_()
    widgets["Plots"].view_combo.setCurrentText("composition")
    QApplication.processEvents()
    window = viewer.window._qt_window
    screen = QApplication.primaryScreen().availableGeometry()
    scr = [screen.x(), screen.y(), screen.width(), screen.height()]
    histogram = transfer.findChild(ConfidenceHistogram)
    legend_hint = transfer.legend.title
    transfer.scroll_area.ensureWidgetVisible(histogram)
    QApplication.processEvents()
    out = {
        "size": size,
        "window_on_screen": _inside(_rect(window), scr) or window.frameGeometry().height() <= screen.height(),
        "status_on_screen": _inside(_rect(window.statusBar()), scr),
        "histogram_on_screen": histogram.isVisible() and _inside(_rect(histogram), scr),
        "legend_hint_fits_dock": legend_hint.isVisible() and legend_hint.width() <= transfer.scroll_area.width(),
        "dock_width": transfer.dock_widget().width(),
        "no_horizontal_scroll": not transfer.scroll_area.horizontalScrollBar().isVisible(),
    }
    transfer.scroll_area.verticalScrollBar().setValue(0)
    QApplication.processEvents()
    viewer.screenshot(str(HERE / "images" / f"gui_{size}.png"), canvas_only=False, flash=False)
    print("LAYOUT " + json.dumps(out), flush=True)
    viewer.close()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for size in SIZES:
        proc = subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {size}x24", sys.executable, __file__, "--child",
                               size], capture_output=True, text=True, env=env, timeout=1200)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("LAYOUT ")]
        print(lines[-1] if lines else proc.stdout[-2000:] + proc.stderr[-3000:], flush=True)


if __name__ == "__main__":
    main()
