"""Issue 17 item 1: the GUI fits a 1920x1080 screen and stays reachable at 1366x768.

``napari-cellama gui`` (:func:`napari_cellama._cli.gui.open_viewer`) with the demo run and
reference is opened on its own Xvfb screen of each size (a subprocess, so the screen size
is the one asked for); the window must not be larger than the screen, its status bar must
be on screen, and the transfer dock's Run button must be on screen once its scroll area
shows it. A second test opens the docks one by one as the Plugins menu does and checks
they are tabbed and scroll instead of stacking past the screen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("_layout_probe.py")


def _inside(rect, screen) -> bool:
    x, y, w, h = rect
    sx, sy, sw, sh = screen
    return x >= sx and y >= sy and x + w <= sx + sw and y + h <= sy + sh


@pytest.mark.gui
@pytest.mark.parametrize("size", ["1920x1080", "1366x768"])
def test_gui_fits_the_screen(size, demo_data):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is needed to open a screen of a given size")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = ["xvfb-run", "-a", "-s", f"-screen 0 {size}x24", sys.executable, str(PROBE),
           str(demo_data.xenium_dir), str(demo_data.reference_h5ad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LAYOUT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    g = json.loads(lines[-1][len("LAYOUT "):])
    width, height = map(int, size.split("x"))
    assert g["screen"][2:] == [width, height]
    assert _inside(g["window"], g["screen"]), g
    assert g["status_visible"] and _inside(g["status_bar"], g["screen"]), g
    assert g["run_visible"] and g["ready"] and _inside(g["run_button"], g["screen"]), g
    assert _inside(g["plots"], g["screen"]) and g["plots"][3] >= 60, g
    assert all(g["scrolling"].values()), g
    steps = [name for name in g["tabbed"] if name != "Plots"]
    assert all(g["tabbed"][name] == len(steps) - 1 for name in steps), g  # one tab group


@pytest.mark.gui
def test_plugin_menu_docks_are_tabbed_and_scroll(viewer, qtbot):
    from qtpy.QtWidgets import QApplication

    from napari_cellama._cli.gui import plugin_widget_names

    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    window.resize(min(1366, screen.width()), min(768, screen.height()))
    names = plugin_widget_names()
    widgets = {}
    for name in names:  # as Plugins > napari-cellama > name does: no tabify asked
        widgets[name] = viewer.window.add_plugin_dock_widget("napari-cellama", name)[1]
        qtbot.wait(10)
    QApplication.processEvents()
    docks = [w.dock_widget() for w in widgets.values()]
    for dock in docks:
        assert len(window.tabifiedDockWidgets(dock)) == len(docks) - 1
    assert window.frameGeometry().height() <= screen.height()
    assert window.minimumSizeHint().height() <= 768
    transfer = widgets["2. Transfer, review and export"]
    transfer.dock_widget().raise_()
    QApplication.processEvents()
    assert transfer.scroll_area is not None and transfer.isVisible()
    transfer.scroll_area.ensureWidgetVisible(transfer.run_button)
    QApplication.processEvents()
    top_left = transfer.run_button.mapToGlobal(transfer.run_button.rect().topLeft())
    assert 0 <= top_left.y() and top_left.y() + transfer.run_button.height() <= screen.height()
