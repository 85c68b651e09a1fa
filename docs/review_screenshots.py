"""Make the screenshots of docs/review.md (docs/images/review_*.png) on the real crop.

    NAPARI_CELLAMA_CACHE=/work/cache xvfb-run -a -s "-screen 0 1920x1080x24" \
        python docs/review_screenshots.py

The real Xenium bone-marrow crop (4,595 cells) with the pbmc3k reference, the default
transfer (real model) run by dock 2, and dock "4. Review" driven as a biologist does: the
review queue walked with the keys, a cell's evidence, the reference-fit warning, a flagged
cluster shown and named, the neighbours on the UMAP, the marker dotplot in the Plots dock with
a type clicked (its cells selected) and a gene clicked (its expression as a layer). What
the page quotes (counts, flagged clusters, markers) is printed at the end.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
PLUGIN = "napari-cellama"
SHARED = HERE.parents[1] / "shared" / "data"


def main() -> None:
    warnings.simplefilter("ignore")
    import napari
    import numpy as np
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_cellama._constants import CELLS_LAYER_NAME
    from napari_cellama.io import read_reference
    from napari_cellama.io.xenium_run import open_xenium_run
    from napari_cellama.layers import xenium_layer_data
    from napari_cellama.session import get_session

    IMAGES.mkdir(exist_ok=True)
    report: list[str] = []

    def pump(n: int = 20) -> None:
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(condition, timeout: float = 1800.0) -> None:
        start = time.time()
        while not condition():
            QApplication.processEvents()
            time.sleep(0.05)
            if time.time() - start > timeout:
                raise TimeoutError

    def shot(viewer, name: str) -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
        pump(30)
        path = IMAGES / f"review_{name}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"saved {path}", flush=True)

    viewer = napari.Viewer()
    viewer.window._qt_window.showNormal()
    viewer.window.resize(1920, 1050)
    xrun = open_xenium_run(SHARED / "xenium_bone_marrow_crop")
    for data, kwargs, kind in xenium_layer_data(xrun):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    session = get_session(viewer)
    ref = read_reference(SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad")
    session.update(query=xrun.table, reference=ref, label_key="cell_type", xenium_root=xrun.root,
                   layer_names={"cells": CELLS_LAYER_NAME})
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    review_dock, review = viewer.window.add_plugin_dock_widget(PLUGIN, "4. Review", tabify=True)
    t = time.time()
    transfer.run(sync=True)
    report.append(f"transfer: {time.time() - t:.1f} s, {transfer.annotation.n_cells:,} cells")
    wait(lambda: review.data is not None and not review.busy)
    review_dock.raise_()
    ann = review.annotation
    rep = session.fit_report
    report.append(rep.summary())
    report.append("counts: " + ", ".join(f"{k} {v}" for k, v in ann.counts().items()))

    # ---- the fit warning (the dock opens its Clusters tab when clusters are flagged)
    shot(viewer, "fit_warning")
    miss = rep.possibly_missing
    # the flagged cluster with erythroid markers (band 3 SLC4A1, AHSP, ALAS2), named from its markers
    ery = miss[miss["top_markers"].str.contains("AHSP|SLC4A1|ALAS2")].sort_values("n_cells", ascending=False)
    if len(ery):
        row = ery.iloc[0]
        cluster = str(row["cluster"])
        review.clusters.select_cluster(cluster)
        review.clusters.show_button.click()
        pump()
        shot(viewer, "cluster_shown")
        review.clusters.name_edit.setText("Erythroid")
        review.clusters.name_button.click()
        pump()
        report.append(f"named cluster {cluster} ({int(row['n_cells'])} cells; markers {row['top_markers']}) "
                      f"Erythroid: {int((ann.cell_type == 'Erythroid').sum())} cells")
        shot(viewer, "cluster_named")
        ann.undo()

    # ---- the queue walked with keys, the evidence of the current cell
    review.tabs.setCurrentIndex(0)
    handler = viewer.window._qt_viewer._key_map_handler
    viewer.layers.selection.active = viewer.layers["cells"]
    for key in (".", ".", "Shift-K", "."):
        handler.press_key(key)
        handler.release_key(key)
        pump(5)
    ev = review.evidence.evidence
    report.append(ev.summary())
    report.append("marker check: " + "; ".join(review.evidence.marker_lines()))
    report.append(review.queue_panel.count_label.text())
    shot(viewer, "evidence_queue")
    scroll = review.tabs.widget(0)
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    shot(viewer, "evidence_markers")

    # ---- a typical cell: the Naive CD4 T cell with the most detected panel genes, clicked
    q = session.query
    naive = ann.cells_of("Naive CD4 T")
    detected = np.asarray((q[naive].X > 0).sum(axis=1)).ravel()
    cell = str(naive[int(np.argmax(detected))])
    review.centre_on(cell)
    i = q.obs_names.get_loc(cell)
    x, y = np.asarray(q.obsm["spatial"])[i][:2]
    clicked = review.cell_at((float(y), float(x))) or cell
    review.show_cell(clicked, select=True)
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    ev = review.evidence.evidence
    report.append("clicked " + ev.summary())
    report.append("marker check: " + "; ".join(review.evidence.marker_lines()))
    shot(viewer, "evidence_cell")

    # ---- neighbours on the UMAP (the Plots dock below the review dock)
    plots_dock, plots = viewer.window.add_plugin_dock_widget(PLUGIN, "Plots", tabify=True)
    plots.compute_map(sync=True)
    review.evidence.umap_button.click()
    pump()
    plots_dock.raise_()
    shot(viewer, "umap_neighbours")
    review_dock.raise_()

    # ---- the marker dotplot in the Plots dock, a type clicked (its cells selected on the tissue)
    plots.view_combo.setCurrentText("marker dotplot")
    wait(lambda: plots.data is not None and not plots.runner.busy)
    pump()
    counts = ann.counts().drop(["Unknown", "Unassigned"], errors="ignore")
    top = counts.sort_values(ascending=False).index[0]
    plots_dock.raise_()
    pump()
    plots.dotplot.click_tick("group", top)
    pump()
    report.append(plots.dotplot.info.text())
    shot(viewer, "dotplot")
    gene = "HBB" if "HBB" in plots.dotplot.genes else plots.dotplot.genes[0]
    plots.dotplot.click_tick("gene", gene)
    pump()
    report.append(plots.dotplot.info.text())
    shot(viewer, "dotplot_gene")
    print("\n".join(report))


if __name__ == "__main__":
    main()
