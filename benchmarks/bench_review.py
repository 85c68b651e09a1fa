"""Interaction times of the "4. Review" dock on the full Xenium section (issue 16).

Issue 16 asks: evidence for a clicked cell <= 0.2 s and next in the review queue <= 0.2 s on
the whole section. Measured in a real napari viewer (run under ``xvfb-run -a``) holding the
84,518-cell bone-marrow section (its image, cells and the transfer's layers), with the
pbmc3k reference (2,638 cells, 458 genes shared with the 477-gene panel) and the default
transfer (ensemble method, onnx embedding; ``NAPARI_CELLAMA_CACHE=/work/cache`` holds its
embeddings, so only sentences, the kNN and the heads are recomputed):

* **prepare** (once per transfer, off the GUI thread in the dock): reference markers,
  evidence index, the dotplot's expression and the reference fit report over the run's
  graph clusters;
* **evidence for a clicked cell**: the mouse callback's work for one click - the cell under
  the pointer (``cell_at``), its neighbours / vote / counts / marker check and the panel
  (tables and vote bars drawn), then Qt events processed;
* **next in queue**: ``.`` - next unreviewed cell by uncertainty, camera centred, the review
  cursor moved, evidence shown; timed twice: when the handler returns, and after the Qt
  events that follow (napari re-slices and redraws every visible layer at the new camera
  position: the image, cells and the transfer's maps; software OpenGL under Xvfb here).
  Walked twice, each walk starting with an empty tile cache (``layers/tiles.py``): keys back
  to back (no time to prefetch the next cell's tiles), and with the event loop running
  ``--dwell`` seconds after each cell (a reviewer looking at it; the next cell's tiles are
  decoded meanwhile on the prefetch thread);
* **accept + next**: ``Shift+K`` - an undoable edit marking the cell reviewed (every listener
  of the annotation runs: dock 2 repaints its ``cell types`` layer and hover features), then
  the next cell; walked the same two ways;
* **grouping the queue**: ticking "in small groups" (the groups are computed in the dock's
  worker): the time the tick holds the GUI thread, when the groups landed, and the longest
  the event loop waited meanwhile;
* **next in queue, in groups**: the queue walked in small spatial groups (the camera moves
  once per group; within a group only the ring moves);
* **save / export**: "Save session" and "Export .h5ad" as the buttons do them (in the
  background): the time the click holds the GUI thread (the snapshot), the longest the event
  loop then waited while the worker wrote, and when the file was there.

``--profile`` prints a cProfile of next-in-queue including napari's redraw, the median with
each visible layer hidden in turn, and a cProfile of accept.

Each figure is the median (and max) over ``--cells`` cells. Run from the repository root::

    NAPARI_CELLAMA_CACHE=/work/cache xvfb-run -a python benchmarks/bench_review.py

Results are also written to ``benchmarks/results/bench_review.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("CELLAMA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
PLUGIN = "napari-cellama"


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xenium", default=str(SHARED / "xenium_bone_marrow"))
    ap.add_argument("--reference", default=str(SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad"))
    ap.add_argument("--label-key", default="cell_type")
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--dwell", type=float, default=0.5,
                    help="seconds the event loop runs between two keys in the second walk (a reviewer "
                         "looking at the cell; the next cell's tiles are prefetched meanwhile)")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile of next-in-queue including napari's redraw (what the redraw costs)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_review.json"))
    args = ap.parse_args()

    import napari
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_cellama._constants import CELLS_LAYER_NAME
    from napari_cellama.core import Annotation, iter_transfer
    from napari_cellama.core._progress import run
    from napari_cellama.core.embedding_options import make_embedder
    from napari_cellama.io import read_reference
    from napari_cellama.io.xenium_run import open_xenium_run
    from napari_cellama.layers import xenium_layer_data
    from napari_cellama.session import get_session

    rows = []
    t0 = time.perf_counter()
    xrun = open_xenium_run(args.xenium)
    ref = read_reference(args.reference)
    rows.append(("open section + reference", time.perf_counter() - t0, "", _load()))
    t0 = time.perf_counter()
    # as the transfer dock runs it (_qt/transfer_job.py): the run's graph clusters feed the Unknown call
    from napari_cellama.io.xenium import read_xenium_clusters

    clusters = read_xenium_clusters(args.xenium)
    result = run(iter_transfer(xrun.table, ref, args.label_key, embedder=make_embedder(cache=True),
                               clusters=clusters))
    rows.append(("transfer (embeddings cached)", time.perf_counter() - t0, "", _load()))
    print(f"{len(result.table):,} cells, {result.panel.n_shared} shared genes, method {result.params['method']}",
          flush=True)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1920, 1080)
    for data, kwargs, kind in xenium_layer_data(xrun):
        viewer.add_layer(Layer.create(data, kwargs, kind))
    session = get_session(viewer)
    session.update(query=xrun.table, reference=ref, label_key=args.label_key, xenium_root=xrun.root,
                   layer_names={"cells": CELLS_LAYER_NAME})
    _, transfer = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    _, review = viewer.window.add_plugin_dock_widget(PLUGIN, "4. Review", tabify=True)
    app = QApplication.instance()
    ann = Annotation(result.table, types=sorted(set(result.reference_labels)), palette=session.type_colors)
    transfer.show_annotation(ann, result)
    review.runner.cancel()  # the dock started its job in a worker; time it here synchronously
    while review.busy:
        app.processEvents()
        time.sleep(0.05)
    t0 = time.perf_counter()
    review.prepare(sync=True)
    rows.append(("prepare: markers, evidence index, fit report", time.perf_counter() - t0, "once per transfer",
                 _load()))
    app.processEvents()

    rng = np.random.default_rng(0)
    q = session.query
    picks = rng.choice(len(ann.cell_ids), size=args.cells, replace=False)
    xy = np.asarray(q.obsm["spatial"])
    row_of = q.obs_names.get_indexer(ann.cell_ids[picks])
    times = []
    for r in row_of:
        t = time.perf_counter()
        cell = review.cell_at((float(xy[r, 1]), float(xy[r, 0])))
        if cell is not None:
            review.show_cell(cell, select=False)
        app.processEvents()
        times.append(time.perf_counter() - t)
    rows.append(("evidence for a clicked cell", float(np.median(times)), f"max {max(times):.3f} s", _load()))

    review.tabs.setCurrentIndex(0)
    if args.profile:
        _profile(review, app, args.cells)
    from napari_cellama.layers.tiles import SHARED_CACHE

    def walk(action, dwell):
        """``--cells`` key presses; after each, the event loop runs for ``dwell`` seconds (the time a
        reviewer looks at the cell: the next cell's tiles are prefetched meanwhile)."""
        handler, shown = [], []
        for _ in range(args.cells):
            t = time.perf_counter()
            review.queue_action(action)
            handler.append(time.perf_counter() - t)
            app.processEvents()
            shown.append(time.perf_counter() - t)
            end = time.perf_counter() + dwell
            while time.perf_counter() < end:
                app.processEvents()
                time.sleep(0.01)
        return handler, shown

    for action, label in (("next", "next in queue"), ("accept", "accept + next")):
        for dwell in (0.0, args.dwell):
            SHARED_CACHE.clear()  # each walk starts with no decoded tile
            handler, shown = walk(action, dwell)
            what = "keys back to back" if not dwell else f"{dwell:g} s per cell"
            if dwell == 0.0:
                rows.append((f"{label}: handler (queue, camera, evidence)", float(np.median(handler)),
                             f"max {max(handler):.3f} s", _load()))
            rows.append((f"{label} + napari redraw, {what}", float(np.median(shown)),
                         f"max {max(shown):.3f} s", _load()))
    t0 = time.perf_counter()
    review.queue_panel.group_check.setChecked(True)  # the queue in small spatial groups, in the dock's worker
    click = time.perf_counter() - t0
    gaps, last = [], time.perf_counter()
    while review.busy:
        app.processEvents()
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        time.sleep(0.01)
    rows.append(("grouping the queue: GUI thread (the tick)", click,
                 f"groups after {time.perf_counter() - t0:.1f} s", _load()))
    rows.append(("grouping the queue: longest GUI stall meanwhile", max(gaps, default=0.0),
                 f"{len(gaps)} event-loop turns", _load()))
    handler, shown = [], []
    for _ in range(args.cells):
        t = time.perf_counter()
        review.queue_action("next")
        handler.append(time.perf_counter() - t)
        app.processEvents()
        shown.append(time.perf_counter() - t)
    rows.append((f"next in queue, in groups ({review.queue.n_groups:,}): handler", float(np.median(handler)),
                 f"max {max(handler):.3f} s", _load()))
    rows.append(("next in queue, in groups: + napari redraw", float(np.median(shown)), f"max {max(shown):.3f} s",
                 _load()))
    review.queue_panel.group_check.setChecked(False)
    rows += _save_rows(transfer, app)
    report = session.fit_report
    flagged = report.possibly_missing if report is not None else []

    print(f"\nreview interactions, {len(ann.cell_ids):,} cells, {len(ref):,} reference cells, "
          f"{result.panel.n_shared} shared genes, median of {args.cells} cells")
    print(f"{'step':<56} {'seconds':>9}  {'note':<22} load average (1/5/15 min)")
    for name, sec, note, load in rows:
        print(f"{name:<56} {sec:>9.3f}  {note:<22} {load}")
    print(f"fit report: {len(report.table) if report is not None else 0} clusters ({report.cluster_source}); "
          f"{len(flagged)} flagged as possibly missing from the reference")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cells": len(ann.cell_ids), "rows": [
        {"step": n, "seconds": s, "note": note, "load": load} for n, s, note, load in rows]}, indent=1))
    viewer.close()


def _save_rows(transfer, app) -> list:
    """"Save session" and "Export .h5ad" as the buttons do them (background=True): the time the
    click holds the GUI thread (the snapshot), the longest the event loop then waited between two
    turns while the worker wrote (the GIL is shared), and the time until the file was there."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, call in (("save session (.zarr)", lambda p: transfer.save_session(p, overwrite=True,
                                                                                     background=True)),
                           ("export cells table (.h5ad)", lambda p: transfer.export_h5ad(p, background=True))):
            path = str(Path(tmp) / ("session.zarr" if "zarr" in what else "cells.h5ad"))
            t0 = time.perf_counter()
            call(path)
            click = time.perf_counter() - t0
            gaps, last = [], time.perf_counter()
            while transfer.runner.busy:
                app.processEvents()
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
                time.sleep(0.01)
            total = time.perf_counter() - t0
            gap = max(gaps, default=0.0)
            rows.append((f"{what}: GUI thread (snapshot)", click, f"file after {total:.1f} s", _load()))
            rows.append((f"{what}: longest GUI stall while writing", gap, f"{len(gaps)} event-loop turns",
                         _load()))
            if not Path(path).exists():
                raise RuntimeError(f"{what}: {path} was not written ({transfer.status.text()})")
    return rows


def _profile(review, app, n: int) -> None:
    """What next-in-queue costs once napari has redrawn: a cProfile, then the median time with
    each visible layer hidden in turn (its share of the redraw), then a cProfile of accept."""
    import cProfile
    import pstats

    viewer = review.viewer
    for layer in viewer.layers:
        print(f"layer {layer.name!r}: {type(layer).__name__}, visible {layer.visible}, "
              f"multiscale {getattr(layer, 'multiscale', None)}, contour {getattr(layer, 'contour', None)}, "
              f"shape {getattr(layer.data, 'shape', None) if not getattr(layer, 'multiscale', False) else layer.data[0].shape}")

    def walk(action: str, k: int) -> float:
        shown = []
        for _ in range(k):
            t = time.perf_counter()
            review.queue_action(action)
            app.processEvents()
            shown.append(time.perf_counter() - t)
        return float(np.median(shown))

    prof = cProfile.Profile()
    prof.enable()
    walk("next", n)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    print(f"next, all layers: {walk('next', n):.3f} s (load {_load()})")
    for layer in [la for la in viewer.layers if la.visible]:
        layer.visible = False
        app.processEvents()
        print(f"next, {layer.name!r} hidden: {walk('next', n):.3f} s (load {_load()})")
        layer.visible = True
        app.processEvents()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        review.queue_action("accept")
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
