"""Make docs/images/prototypes_*.png: prototypes as an annotation on the real bone-marrow crop.

    NAPARI_CELLAMA_CACHE=/work/cache xvfb-run -a -s "-screen 0 1920x1080x24" python docs/prototypes_screenshots.py

Loads the real Xenium bone-marrow crop (4,595 cells) and the pbmc3k reference (widget 1),
transfers labels (widget 2, defaults), assigns cell types by the package's default marker
prototypes (defaults), then

* ``prototypes_combined.png``: the window with "Use prototype labels where the transfer says
  Unknown" ticked (legend, threshold and histogram of the combined annotation in dock 2);
* ``prototypes_combined_dock.png``: dock 2 alone (legend with counts, histogram);
* ``prototypes_as_annotation.png``: the prototype run itself shown as the annotation (dock 2);
* ``prototypes_box.png``: the prototypes dock with its "Use the prototype labels" box.

Prints the counts behind the pictures (cells per label source, Unknown before / after).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = "napari-cellama"
CROP = Path(os.environ.get("XENIUM_CROP", "/work/shared/data/xenium_bone_marrow_crop"))
PBMC3K = Path(os.environ.get("PBMC3K", "/work/shared/data/references/pbmc3k/pbmc3k.h5ad"))


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    import napari
    from qtpy.QtWidgets import QApplication

    def wait(condition, timeout=1800):
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

    t0 = time.time()
    viewer = napari.Viewer(show=True)
    qt_window = viewer.window._qt_window
    qt_window.resize(1920, 1040)
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    _, protos = viewer.window.add_plugin_dock_widget(PLUGIN, "Marker prototypes", tabify=True)
    load.set_reference_path(PBMC3K, "cell_type")
    wait(lambda: load.label_combo.count() > 0 and not load.busy)
    load.set_xenium_path(CROP)
    load.load()
    wait(lambda: not load.busy)
    if load.last_error:
        raise SystemExit(load.last_error)
    from napari_cellama.core.coverage import coverage_text

    for _, row in load.session.coverage.iterrows():
        print(coverage_text(row))
    transfer.run(sync=True)
    base = transfer.annotation
    n_unknown = int((base.cell_type.astype(str) == "Unknown").sum())
    print(f"transfer: {base.n_cells:,} cells, {n_unknown:,} Unknown ({time.time() - t0:.0f} s)")
    protos.run()
    wait(lambda: not protos.busy)
    if protos.result is None:
        raise SystemExit(protos.status.text())
    print(f"prototypes done ({time.time() - t0:.0f} s)")
    box = protos.annotation_box
    out = HERE / "images"

    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtCore import Qt

    def shoot(name, widget=None):
        for toast in qt_window.findChildren(NapariQtNotification):
            toast.close()
        docks = [d for d in viewer.window._dock_widgets.values() if d.isVisible() and "napari-cellama" in d.name]
        qt_window.resizeDocks(docks, [560] * len(docks), Qt.Horizontal)
        settle()
        if widget is None:
            viewer.screenshot(str(out / name), canvas_only=False, flash=False)
        else:
            widget.grab().save(str(out / name))

    if "prototype cell types" in viewer.layers:
        viewer.layers["prototype cell types"].visible = False
    dock_of = {d.name.split(" (")[0]: d for d in viewer.window._dock_widgets.values()}
    box.review_button.click()
    dock_of["2. Transfer, review and export"].raise_()
    settle()
    viewer.reset_view()
    shoot("prototypes_as_annotation.png")
    box.combine_check.setChecked(True)
    comb = transfer.annotation
    src = comb.label_source.value_counts()
    print("combined label sources:", src.to_dict())
    print("still Unknown:", int((comb.cell_type.astype(str) == "Unknown").sum()))
    print("prototype labels given to former Unknown cells:",
          comb.cell_type[comb.label_source == "prototypes"].astype(str).value_counts().head(8).to_dict())
    viewer.reset_view()
    settle()
    shoot("prototypes_combined.png")
    shoot("prototypes_combined_dock.png", transfer)
    dock_of["Marker prototypes"].raise_()
    shoot("prototypes_box.png", protos)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
