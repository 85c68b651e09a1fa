"""Make docs/images/xenium_full_section*.png: the full section open, load widget docked.

    xvfb-run -a -s "-screen 0 1600x1000x24" \
        python docs/xenium_screenshot.py [XENIUM_DIR] [REFERENCE.h5ad]

Defaults: the 84,518-cell bone-marrow section in ../shared/data and the demo reference.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = HERE.parents[1] / "shared" / "data" / "xenium_bone_marrow"


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellama.datasets import make_demo

    run = Path(sys.argv[1]) if len(sys.argv) > 1 else FULL
    reference = Path(sys.argv[2]) if len(sys.argv) > 2 else make_demo().reference_h5ad
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open(str(run), plugin="napari-cellama")
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-cellama", "1. Load Xenium and reference"
    )
    widget.use_open_layers()

    def wait(condition, timeout=600):
        start = time.time()
        while not condition():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                raise TimeoutError

    widget.set_reference_path(reference, "cell_type")
    wait(lambda: widget.label_combo.count() > 0 and not widget.busy)
    widget.load()
    wait(lambda: not widget.busy)
    if widget.last_error:
        raise SystemExit(widget.last_error)
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # start-up notices (e.g. Qt binding deprecation) are not part of the picture
    for _ in range(10):
        QApplication.processEvents()
    out = HERE / "images" / "xenium_full_section.png"
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"saved {out}")
    # a close-up at full resolution: cells (labels) over their nuclei (DAPI)
    points = viewer.layers["cell centroids"]
    viewer.camera.center = tuple(points.data[len(points.data) // 3])
    viewer.camera.zoom = 6.0
    for _ in range(20):
        QApplication.processEvents()
    out = HERE / "images" / "xenium_full_section_zoom.png"
    viewer.screenshot(str(out), canvas_only=True, flash=False)
    print(f"saved {out}")
    viewer.close()


if __name__ == "__main__":
    main()
