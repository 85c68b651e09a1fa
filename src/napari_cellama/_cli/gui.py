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


def open_viewer(path=None, demo=False, reference=None, show=True):
    """Create a viewer with every plugin widget docked; returns ``(viewer, {name: widget})``."""
    import napari

    viewer = napari.Viewer(show=show)
    widgets = {}
    for name in plugin_widget_names():
        dock, widget = viewer.window.add_plugin_dock_widget("napari-cellama", name, tabify=True)
        widgets[name] = widget
    if demo:
        from ..datasets import make_demo

        data = make_demo()
        path = path or data.xenium_dir
        reference = reference or data.reference_h5ad
    if path is not None:
        viewer.open(str(path), plugin="napari-cellama")
    if reference is not None:
        for widget in widgets.values():
            setter = getattr(widget, "set_reference_path", None)
            if setter is not None:
                setter(str(reference))
    first = next(iter(widgets.values()), None)
    if first is not None and hasattr(first, "parent") and first.parent() is not None:
        first.parent().raise_()
    return viewer, widgets


def run(args) -> None:
    import os
    from pathlib import Path

    from ..validators import CellamaInputError

    if args.path is not None and not Path(args.path).expanduser().exists():
        raise CellamaInputError(f"{args.path} not found (give a Xenium output folder)")
    if args.reference is not None and not Path(args.reference).expanduser().is_file():
        raise CellamaInputError(f"reference {args.reference} not found")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise CellamaInputError(
            "no display: run napari-cellama gui on a desktop, or under xvfb-run for screenshots; "
            "`napari-cellama demo` runs the transfer without a display"
        )
    import napari

    viewer, _ = open_viewer(args.path, args.demo, args.reference, show=True)
    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        for _ in range(20):
            QApplication.processEvents()
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"saved {args.screenshot}", file=sys.stderr)
        viewer.close()
        return
    napari.run()
