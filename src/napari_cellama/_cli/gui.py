"""``napari-cellama gui``: open napari with the plugin's widgets docked (and the demo loaded)."""

from __future__ import annotations

import sys

NAME = "gui"
HELP = "open napari with the CELLama widgets docked; --demo also opens the demo run and its reference"


def add_arguments(p) -> None:
    p.add_argument("path", nargs="?", default=None, help="Xenium output folder to open")
    p.add_argument("--demo", action="store_true", help="open the demo run and select its reference")
    p.add_argument("--reference", default=None, metavar="REF.h5ad", help="reference to select in the load widget")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="save a screenshot of the window and exit (for documentation and checks)")


def plugin_widget_names() -> list[str]:
    """Display names of the plugin's dock widgets, in manifest order."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest("napari-cellama")
    return [w.display_name for w in manifest.contributions.widgets or []]


PLOTS_WIDGET = "Plots"


def open_viewer(path=None, demo=False, reference=None, show=True):
    """Create a viewer with every plugin widget docked; returns ``(viewer, {name: widget})``.

    The window fills the screen's available area and never exceeds it (status bar and plots
    stay on screen): every dock's form scrolls, the step widgets (and any other dock of the
    plugin, e.g. "4. Review") are tabbed on the right (step 1 in front) and the plots sit
    below the canvas. With ``demo`` the demo run is opened, its reference chosen, and the
    panel check started, so the transfer can be run at once.
    """
    import napari

    viewer = napari.Viewer(show=show)
    fit_window(viewer)
    widgets = {}
    for name in plugin_widget_names():
        if name == PLOTS_WIDGET:
            from .._qt.plots_widget import PlotsWidget

            widget = PlotsWidget(viewer)
            viewer.window.add_dock_widget(widget, name=PLOTS_WIDGET, area="bottom")
        else:
            _, widget = viewer.window.add_plugin_dock_widget("napari-cellama", name, tabify=True)
            if hasattr(widget, "install_scrolling"):
                widget.install_scrolling()
        widgets[name] = widget
    if demo:
        from ..datasets import make_demo

        data = make_demo()
        path = path or data.xenium_dir
        reference = reference or data.reference_h5ad
    if path is not None:
        viewer.open(str(path), plugin="napari-cellama")
    load = next((w for w in widgets.values() if hasattr(w, "set_reference_path")), None)
    if load is not None and reference is not None:
        if path is not None and hasattr(load, "columns_ready"):
            from qtpy.QtCore import QTimer

            def _load_when_idle(load=load):
                if load.busy:  # the worker that listed the columns is still finishing
                    QTimer.singleShot(100, _load_when_idle)
                    return
                load.use_open_layers()
                load.load()

            def _load_when_ready(_columns, load=load):
                load.columns_ready.disconnect(_load_when_ready)
                _load_when_idle()

            load.columns_ready.connect(_load_when_ready)
        load.set_reference_path(str(reference), "cell_type" if demo else None)
    fit_window(viewer)
    if load is not None and load.dock_widget() is not None:
        load.dock_widget().raise_()
    return viewer, widgets


def fit_window(viewer) -> None:
    """Size the viewer's window to the available area of its screen (never larger), the
    plots dock a third of the height below the canvas."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QDockWidget

    window = viewer.window._qt_window
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    geometry = screen.availableGeometry()
    window.resize(geometry.width(), geometry.height())
    window.move(geometry.topLeft())
    bottom = [d for d in window.findChildren(QDockWidget)
              if window.dockWidgetArea(d) == Qt.BottomDockWidgetArea and d.isVisible()]
    if bottom:
        window.resizeDocks(bottom, [geometry.height() // 3] * len(bottom), Qt.Vertical)


def run(args) -> None:
    import os
    from pathlib import Path

    from ..validators import CellamaInputError

    if args.path is not None and not Path(args.path).expanduser().exists():
        raise CellamaInputError(f"{args.path} not found (give a Xenium output folder)")
    if args.reference is not None and not Path(args.reference).expanduser().is_file():
        raise CellamaInputError(f"reference {args.reference} not found")
    if args.screenshot:  # a missing or unwritable folder fails now, not after the viewer has loaded
        from ..io.destinations import check_destination

        check_destination(args.screenshot, "screenshot", sources=[args.path, args.reference])
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CellamaInputError(
            "no display: run napari-cellama gui on a desktop, or under xvfb-run for screenshots; "
            "`napari-cellama demo` runs the transfer without a display"
        )
    import napari

    viewer, widgets = open_viewer(args.path, args.demo, args.reference, show=True)
    if args.screenshot:
        settle(widgets)
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"saved {args.screenshot}", file=sys.stderr)
        viewer.close()
        return
    napari.run()


def settle(widgets: dict, minimum: float = 3.0, timeout: float = 180.0) -> None:
    """Process Qt events until no widget is busy (at least ``minimum`` s, at most ``timeout`` s)."""
    import time

    from qtpy.QtWidgets import QApplication

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        QApplication.processEvents()
        elapsed = time.monotonic() - start
        if elapsed > minimum and not any(getattr(w, "busy", False) for w in widgets.values()):
            break
        time.sleep(0.05)
