"""Make docs/images/niche_*.png: the niche widget on the demo run, in a real viewer.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/niche_screenshots.py

Loads the demo (widget 1), transfers labels (widget 2), clusters the transferred
``CD14+ Monocyte`` cells by niche with the widget's defaults (widget 3: k = 10, genes +
niche, Leiden 0.3), highlights one niche and saves

* ``niche_window.png``: the whole window (tissue overlay and the niche dock);
* ``niche_panel.png``: the niche dock alone (legend and composition heatmap);
* ``niche_markers.png``: the same with its marker-gene table shown;
* ``niche_overlay.png``: the canvas: clustered cells coloured by niche, all other cells
  grey, the highlighted niche outlined in white.

Set ``NAPARI_CELLAMA_CACHE`` to reuse a demo and cached embeddings.
"""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = "napari-cellama"
CELL_TYPE = "CD14+ Monocyte"
HIGHLIGHT = "3"


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellama.datasets import make_demo

    demo = make_demo()

    def wait(condition, timeout=900):
        start = time.time()
        while not condition():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                raise TimeoutError

    def settle(n=30):
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(0.02)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1600, 1000)
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    _, niche = viewer.window.add_plugin_dock_widget(PLUGIN, "3. Niche clusters", tabify=True)
    load.set_reference_path(demo.reference_h5ad, "cell_type")
    wait(lambda: load.label_combo.count() > 0 and not load.busy)
    load.set_xenium_path(demo.xenium_dir)
    load.load()
    wait(lambda: not load.busy)
    if load.last_error:
        raise SystemExit(load.last_error)
    transfer.run(sync=True)
    niche.set_cell_types([CELL_TYPE])
    niche.run(sync=True)
    result = niche.result
    print(result.summary())
    niche.select_cluster(HIGHLIGHT)
    viewer.reset_view()
    settle()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # start-up notices are not part of the picture
    settle()
    out = HERE / "images"
    viewer.screenshot(str(out / "niche_window.png"), canvas_only=False, flash=False)
    niche.grab().save(str(out / "niche_panel.png"))
    niche.tabs.setCurrentIndex(1)  # the marker genes
    settle()
    niche.grab().save(str(out / "niche_markers.png"))
    niche.tabs.setCurrentIndex(0)
    # the canvas alone, as large as the window: docks hidden, tissue filling the view
    from qtpy.QtWidgets import QDockWidget

    for dock in viewer.window._qt_window.findChildren(QDockWidget):
        dock.hide()
    settle()
    viewer.reset_view()
    settle()
    viewer.screenshot(str(out / "niche_overlay.png"), canvas_only=True, flash=False)
    for name in ("niche_window.png", "niche_panel.png", "niche_markers.png", "niche_overlay.png"):
        print(f"saved {out / name}")
    viewer.close()


if __name__ == "__main__":
    main()
