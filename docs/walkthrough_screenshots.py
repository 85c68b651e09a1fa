"""Make the screenshots of docs/walkthrough.md (docs/images/walkthrough_*.png) on the demo data.

    NAPARI_CELLAMA_CACHE=/tmp/dev-cache xvfb-run -a -s "-screen 0 1920x1200x24" \
        python docs/walkthrough_screenshots.py [OUT_DIR]

Drives the real widgets in a real napari viewer with the real model, the way a biologist
does: it clicks the widgets' buttons, moves the mouse over cells (the status bar text is
recorded), draws the selection polygon by clicking its vertices on the canvas, and passes
paths where a file dialog would open. ``OUT_DIR`` (default ``/tmp/cellama-walkthrough``)
receives the exported files, read back at the end with anndata and spatialdata; what the
walkthrough quotes (accuracy against the demo's planted truth, counts, hover texts, timings,
file heads) is printed at the end.

The transfer of step 3 runs with the embedding cache off, so that the progress bar shows real
embedding work even when the demo was embedded before; it takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
PLUGIN = "napari-cellama"
WINDOW = (1900, 1150)


def main() -> None:
    warnings.simplefilter("ignore")
    import napari
    import numpy as np
    import pandas as pd
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_cellama.datasets import make_demo
    from napari_cellama.session import get_session

    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/cellama-walkthrough")
    out_dir.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(exist_ok=True)
    _app = QApplication.instance() or QApplication([])  # kept alive for the whole run
    demo = make_demo()
    report: list[str] = []

    def pump(n: int = 20) -> None:
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(condition, timeout: float = 900.0, what: str = "") -> None:
        start = time.time()
        while not condition():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                raise TimeoutError(what)

    def close_toasts(viewer) -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
        pump(5)

    def shot(viewer, name: str, canvas_only: bool = False, toasts: bool = False) -> Path:
        if not toasts:
            close_toasts(viewer)
        pump(20)
        path = IMAGES / f"walkthrough_{name}.png"
        viewer.screenshot(str(path), canvas_only=canvas_only, flash=False)
        print(f"saved {path}", flush=True)
        return path

    def grab(widget, name: str) -> Path:
        pump(10)
        path = IMAGES / f"walkthrough_{name}.png"
        widget.grab().save(str(path))
        print(f"saved {path}", flush=True)
        return path

    def to_pixel(viewer, y: float, x: float) -> QPoint:
        """Canvas pixel of a world position (2D camera: centre and zoom)."""
        native = viewer.window._qt_viewer.canvas.native
        cy, cx = viewer.camera.center[-2:]
        z = viewer.camera.zoom
        return QPoint(round((x - cx) * z + native.width() / 2),
                      round((y - cy) * z + native.height() / 2))

    def cell_xy(viewer, cell_id: str):
        """(y, x) microns of a cell's centroid, from the run's centroid points."""
        points = viewer.layers["cell centroids"]
        row = int(np.flatnonzero(points.features["cell_id"].astype(str).to_numpy() == cell_id)[0])
        y, x = points.data[row][-2:]
        return float(y), float(x)

    def hover(viewer, cell_id: str) -> str:
        """Move the mouse onto a cell and return the status bar text."""
        native = viewer.window._qt_viewer.canvas.native
        QTest.mouseMove(native, to_pixel(viewer, *cell_xy(viewer, cell_id)) + QPoint(1, 0))
        pump(5)
        QTest.mouseMove(native, to_pixel(viewer, *cell_xy(viewer, cell_id)))
        pump(10)
        status = viewer.status
        return status["coordinates"] if isinstance(status, dict) else str(status)

    def click(viewer, y: float, x: float, modifier=Qt.NoModifier) -> None:
        QTest.mouseClick(viewer.window._qt_viewer.canvas.native, Qt.LeftButton, modifier,
                         to_pixel(viewer, y, x))
        pump(5)

    # ------------------------------------------------------------------ 1. open the demo
    viewer = napari.Viewer(show=True)
    viewer.window.resize(*WINDOW)
    pump()
    viewer.open_sample(PLUGIN, "demo")
    viewer.reset_view()
    shot(viewer, "1_open")

    # ------------------------------------------------------------------ 2. load and check
    load_dock, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    load.use_open_layers()
    load.set_reference_path(demo.reference_h5ad, "cell_type")
    wait(lambda: load.label_combo.count() > 0 and not load.busy, what="reference columns")
    load.load_button.click()
    wait(lambda: not load.busy, what="load")
    if load.last_error:
        raise SystemExit(load.last_error)
    viewer.window._qt_window.resizeDocks([load_dock], [560], Qt.Horizontal)
    pump()
    viewer.reset_view()
    shot(viewer, "2_load")

    # ------------------------------------------------------------------ 3. run (async, progress)
    tr_dock, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export",
                                                             tabify=True)
    tr_dock.raise_()
    pump()
    transfer.cache_check.setChecked(False)  # real embedding work on the bar, see the docstring
    bar = transfer.runner.bar
    started = time.time()
    transfer.run_button.click()
    wait(lambda: bar.format().startswith("embedding query") and bar.value() > 0.3 * bar.maximum(),
         what="embedding query")
    viewer.reset_view()
    shot(viewer, "3_progress")
    report.append(f"progress bar during the run: {bar.format()}")
    wait(lambda: not transfer.runner.busy, what="transfer")
    report.append(f"transfer without cache: {time.time() - started:.0f} s")
    if transfer.runner.last_error:
        raise SystemExit(transfer.runner.last_error)
    transfer.cache_check.setChecked(True)
    ann = transfer.annotation
    truth = pd.read_csv(demo.truth_csv, index_col="cell_id")["cell_type"].astype(str)
    accuracy = float((ann.cell_type.reindex(truth.index).astype(str) == truth).mean())
    report.append(f"accuracy vs planted truth: {accuracy:.3f} ({len(truth)} cells); "
                  f"majority class {truth.value_counts(normalize=True).iloc[0]:.3f}")
    report.append("counts:\n" + ann.counts().to_string())

    # ------------------------------------------------------------------ 4. cell types + legend
    viewer.reset_view()
    cid = str(ann.table[ann.table["confidence"] < 0.9].index[0])
    status = hover(viewer, cid)
    report.append(f"hover {cid}: {status}")
    shot(viewer, "4_types")

    # ------------------------------------------------------------------ 5. confidence / distance
    transfer.map_combo.setCurrentText("confidence")
    shot(viewer, "5_confidence")
    transfer.map_combo.setCurrentText("distance to reference")
    shot(viewer, "5_distance")
    transfer.map_combo.setCurrentText("cell types")

    # ------------------------------------------------------------------ 6. threshold
    transfer.threshold_slider.setValue(60)
    report.append(transfer.threshold_label.text())
    report.append(f"hover {cid} after the threshold: {hover(viewer, cid)}")
    shot(viewer, "6_threshold")

    # ------------------------------------------------------------------ 7. show only one type
    show = "CD19+ B"
    transfer.legend.select_type(show)
    transfer.legend.only_button.click()
    shot(viewer, "7_show_only")
    transfer.legend.all_button.click()

    # ------------------------------------------------------------------ 8. polygon + manual edit
    # an octagon around the centre of the left B-cell follicle, clicked vertex by vertex
    q = get_session(viewer).query
    xy = pd.DataFrame(np.asarray(q.obsm["spatial"]), index=q.obs_names, columns=["x", "y"])
    niche = pd.read_csv(demo.truth_csv, index_col="cell_id")["niche"].reindex(xy.index)
    follicle = xy[niche == "follicle"]
    left = follicle[follicle["x"] < follicle["x"].median()]
    cx, cy = left["x"].median(), left["y"].median()
    r = 30.0  # microns
    transfer.polygon_button.click()
    for a in np.linspace(0, 2 * np.pi, 9)[:-1]:
        click(viewer, cy + r * np.sin(a), cx + r * np.cos(a))
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key_Escape)  # close the polygon
    pump()
    report.append(f"polygons drawn by clicking: {len(viewer.layers['selection polygons'].data)}")
    transfer.in_polygons_button.click()
    n = len(transfer.selected)
    transfer.assign_combo.setCurrentText("Follicle centre (manual)")
    transfer.assign_button.click()
    edited = transfer.selected[0]
    def manual() -> int:
        return int((ann.source == "manual").sum())

    after_edit = manual()
    transfer.undo_button.click()
    after_undo = manual()
    transfer.redo_button.click()
    report.append(f"manual cells after the edit {after_edit}, after Undo {after_undo}, after Redo {manual()}")
    report.append(f"polygon selected {n} cells; undo enabled: {transfer.undo_button.isEnabled()} "
                  f"({transfer.undo_button.toolTip()})")
    status = hover(viewer, str(edited))
    report.append(f"hover {edited} after the edit: {status}")
    shot(viewer, "8_manual")
    home = (tuple(viewer.camera.center), viewer.camera.zoom)
    viewer.camera.center = (cy, cx)
    viewer.camera.zoom = home[1] * 2.5
    shot(viewer, "8_manual_zoom", canvas_only=True)
    viewer.camera.center, viewer.camera.zoom = home

    # ------------------------------------------------------------------ 9. plots
    plots_dock, plots = viewer.window.add_plugin_dock_widget(PLUGIN, "Plots", tabify=True)
    plots_dock.raise_()
    started = time.time()
    plots.umap_button.click()
    wait(lambda: not plots.runner.busy, what="UMAP")
    report.append(f"UMAP: {time.time() - started:.0f} s")
    plots.view_combo.setCurrentText("UMAP")
    shot(viewer, "9_umap")
    plots.view_combo.setCurrentText("composition")
    shot(viewer, "9_composition")
    plots.view_combo.setCurrentText("contingency")
    plots.other_combo.setCurrentText("Xenium graph clusters")
    shot(viewer, "9_contingency")

    # ------------------------------------------------------------------ 10. export
    tr_dock.raise_()
    pump()
    zarr_path = out_dir / "demo_annotation.zarr"
    transfer.save_session(zarr_path, overwrite=True)
    transfer.export_h5ad(out_dir / "demo_cells.h5ad")
    transfer.export_explorer_csv(out_dir / "demo_cell_groups.csv")
    transfer.export_csv(out_dir / "demo_cells.csv")
    grab(transfer, "10_export")

    import anndata as ad
    import spatialdata

    for name, n in (("demo_cell_groups.csv", 5), ("demo_cells.csv", 4)):
        lines = (out_dir / name).read_text().splitlines()[:n]
        report.append(f"{name} head:\n" + "\n".join(lines))
    adata = ad.read_h5ad(out_dir / "demo_cells.h5ad")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        report.append(f"h5ad: {adata}\n" + adata.obs.head().to_string())
    sdata = spatialdata.read_zarr(zarr_path)
    report.append(f"zarr: {sdata}")

    # ------------------------------------------------------------------ 11. reopen in a new viewer
    viewer2 = napari.Viewer(show=True)
    viewer2.window.resize(*WINDOW)
    pump()
    _, transfer2 = viewer2.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    saved = transfer2.open_session(zarr_path)
    if saved is None:
        raise SystemExit(transfer2.runner.last_error)
    viewer2.reset_view()
    report.append(f"hover {edited} in the reopened session: {hover(viewer2, str(edited))}")
    from napari.utils import progress

    report.append(f"open progress bars: {[p.desc for p in getattr(progress, '_all_instances', [])]}")
    report.append(f"restored: {transfer2.status.text()}; manual cells "
                  f"{int((transfer2.annotation.source == 'manual').sum())}; "
                  f"undo enabled {transfer2.undo_button.isEnabled()}")
    shot(viewer2, "11_reopen")

    print("\n\n".join(report))
    viewer2.close()
    viewer.close()


if __name__ == "__main__":
    main()
