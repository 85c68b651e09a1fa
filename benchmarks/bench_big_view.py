"""Napari at a million cells (issue 15): open, pan / zoom and recolour a 1M-cell run.

The real bone-marrow section (84,518 cells, read with the project's reader,
``io.xenium_run.open_xenium_run``) is tiled ``--grid`` times (default 6 x 2 = 12 copies,
1,014,216 cells) into ONE label image and one DAPI image (``_mosaic.Mosaic``: lazy; each
requested region is read from the copies it overlaps; copy ``t``'s ids are offset by ``t x
(max id + 1)``); the pyramid is the reader's own (built once), napari draws only the level on
screen. The 1M-row annotation is the section's transfer (pbmc3k reference, default method;
``--labels transfer``, fast with ``NAPARI_CELLAMA_CACHE=/work/cache``) or the run's own graph
clusters with a seeded random confidence (``--labels clusters``), repeated per copy. The layers
are the ones the transfer dock makes (``layers.annotation_layer_data`` for ``cell types``,
``layers.cell_values_layer_data`` for ``confidence``; the cells layer with its 1M-row features).

Figures (seconds; each interaction the median of ``--repeat`` with its max):

* **read section**: the reader on the section (cells table, label pyramid, image pyramid);
* **labels**: the transfer (or clusters) of the section;
* **build 1M**: mosaic pyramids, the 1M-row table, ``Annotation`` with label ids;
* **first image**: layers created and added to a 1920x1080 viewer until the first frame is
  drawn (Qt events processed and the canvas rendered); **time to first image, labels
  excluded**: read + build + first image; **total to first image** adds the labels;
* each interaction: the change, then Qt events processed and the canvas rendered (the redraw
  napari needs to show it): **redraw alone**, **pan** (a quarter view), **zoom in 8x / out**,
  **cell types <-> confidence** (the layers' visibility, as the dock's "show" control),
  **threshold change** (``Annotation.set_threshold`` + ``refresh_annotation_labels``, the
  dock's handler), **one type shown / all types** (``show_only`` / ``show_all`` +
  ``refresh_annotation_colors``); "changed" says whether the rendered picture changed;
* **edit one cell**: ``Annotation.assign`` of one cell + ``refresh_annotation_labels`` (the
  layer part of the review dock's accept);
* **hover features**: the transfer dock also copies the cell types onto the cells layer's
  features after each threshold change or edit (``layers.add_cell_features``, no redraw):
  the first call adds the columns, an update replaces them in place;
* **memory**: resident set size after the first image and the process peak.

Run from the repository root (software OpenGL under Xvfb)::

    NAPARI_CELLAMA_CACHE=/work/cache xvfb-run -a -s "-screen 0 1920x1080x24" \\
        python benchmarks/bench_big_view.py --screenshot docs/images/million_cells.png

Results go to ``benchmarks/results/bench_big_view.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mosaic import mosaic_levels  # noqa: E402

SHARED = Path(os.environ.get("CELLAMA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e9


def _section_labels(xrun, how: str, reference: str, label_key: str) -> pd.DataFrame:
    """Per cell of the section: transferred_type, confidence, distance."""
    from napari_cellama._constants import CONFIDENCE, DISTANCE, TRANSFERRED_TYPE

    if how == "clusters":
        from napari_cellama.io.xenium import read_xenium_clusters

        clusters = read_xenium_clusters(xrun.root).reindex(xrun.table.obs_names)
        rng = np.random.default_rng(0)
        return pd.DataFrame({TRANSFERRED_TYPE: "cluster " + clusters.astype(str).to_numpy(dtype=object),
                             CONFIDENCE: rng.uniform(0.2, 1.0, len(clusters)), DISTANCE: 0.1},
                            index=xrun.table.obs_names)
    from napari_cellama.core import iter_transfer
    from napari_cellama.core._progress import run
    from napari_cellama.core.embedding_options import make_embedder
    from napari_cellama.io import read_reference

    result = run(iter_transfer(xrun.table, read_reference(reference), label_key, embedder=make_embedder(cache=True)))
    return result.table[[TRANSFERRED_TYPE, CONFIDENCE, DISTANCE]]


def _tiled_table(table: pd.DataFrame, labels: np.ndarray, copies: int, id_step: int):
    ids = np.concatenate([np.char.add(f"c{t}_", table.index.to_numpy(dtype=str)) for t in range(copies)])
    big = pd.concat([table] * copies, ignore_index=True)
    big.index = pd.Index(ids, name="cell_id")
    label_ids = np.concatenate([labels + t * id_step for t in range(copies)]).astype(np.int64)
    return big, label_ids


def main() -> None:  # noqa: PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xenium", default=str(SHARED / "xenium_bone_marrow"))
    ap.add_argument("--reference", default=str(SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad"))
    ap.add_argument("--label-key", default="cell_type")
    ap.add_argument("--labels", choices=("transfer", "clusters"), default="transfer")
    ap.add_argument("--grid", type=int, nargs=2, default=(6, 2), metavar=("ROWS", "COLS"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--screenshot", default=None, help="save viewer.screenshot(canvas_only=False) here")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_big_view.json"))
    args = ap.parse_args()

    import napari
    from napari.layers import Image, Labels, Layer
    from qtpy.QtWidgets import QApplication

    from napari_cellama._constants import CELL_ID, CONFIDENCE, LABEL_ID
    from napari_cellama.core import Annotation
    from napari_cellama.io.xenium_run import open_xenium_run, raster_placement
    from napari_cellama.layers import (
        add_cell_features,
        annotation_layer_data,
        cell_values_layer_data,
        refresh_annotation_colors,
        refresh_annotation_labels,
    )
    from napari_cellama.layers.meta import _meta

    rows: list[tuple] = []
    start = time.perf_counter()

    def add(name, sec, note=""):
        rows.append((name, float(sec), note, _load()))
        print(f"{name:<40} {sec:8.3f} s  {note}", flush=True)

    t0 = time.perf_counter()
    xrun = open_xenium_run(args.xenium)
    add("read section (84,518 cells)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    table = _section_labels(xrun, args.labels, args.reference, args.label_key)
    add(f"labels of the section ({args.labels})", time.perf_counter() - t0)

    t0 = time.perf_counter()
    grid = tuple(args.grid)
    copies = grid[0] * grid[1]
    obs = xrun.table.obs
    id_step = int(obs[LABEL_ID].max()) + 1
    dtype = np.uint32 if copies * id_step < 2**32 else np.uint64
    label_levels = mosaic_levels(xrun.cell_levels, grid, id_step=id_step, dtype=dtype)
    channel, img = next(iter(xrun.image_levels.items()))
    image_levels = mosaic_levels(img, grid)
    big, label_ids = _tiled_table(table, obs[LABEL_ID].reindex(table.index).to_numpy(np.int64), copies, id_step)
    ann = Annotation(big, label_ids=label_ids)
    features = pd.DataFrame({"index": label_ids, CELL_ID: big.index.to_numpy(dtype=str)})
    add(f"build {len(big):,}-cell mosaic + annotation", time.perf_counter() - t0,
        f"{label_levels[0].shape[0]:,} x {label_levels[0].shape[1]:,} px, {len(label_levels)} levels")

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1920, 1080)
    app = QApplication.instance()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    for _ in range(5):
        app.processEvents()

    def draw():
        app.processEvents()
        return canvas.render()[..., :3]

    draw()
    t0 = time.perf_counter()
    place = raster_placement(xrun.pixel_size)
    viewer.add_layer(Image(image_levels, multiscale=True, name=channel, colormap="gray",
                           contrast_limits=list(xrun.image_contrast[channel]), **place))
    cells = viewer.add_layer(Labels(label_levels, multiscale=True, name="cells", features=features, opacity=0.6,
                                    metadata=_meta("cells", xrun.root, xrun.pixel_size), **place))
    types = viewer.add_layer(Layer.create(*annotation_layer_data(cells, ann)))
    conf = viewer.add_layer(Layer.create(*cell_values_layer_data(
        cells, ann.cell_ids, ann.table[CONFIDENCE].to_numpy(), name="confidence", contrast_limits=(0.0, 1.0))))
    conf.visible = False
    cells.contour = 1
    viewer.reset_view()
    draw()
    first = time.perf_counter() - t0
    add("first image (layers added, drawn)", first)
    open_s = sum(sec for name, sec, _n, _l in rows if name.startswith(("read section", "build ")))
    add("time to first image, labels excluded", open_s + first, "read + build 1M + first image")
    add("total to first image", time.perf_counter() - start, "from the start of this script")
    rss_open = _rss_gb()

    def timed(name, action, setup=None, note=""):
        """Median over ``--repeat`` of: ``action()``, Qt events, canvas rendered (after an
        untimed ``setup()`` and draw); whether the rendered picture changed."""
        times, changed = [], []
        for _ in range(args.repeat):
            if setup is not None:
                setup()
            before = draw()
            t = time.perf_counter()
            action()
            after = draw()
            times.append(time.perf_counter() - t)
            changed.append(before.shape == after.shape and bool((before != after).any()))
        what = f"max {max(times):.3f}; changed {'yes' if all(changed) else 'NO' if not any(changed) else 'some'}"
        add(name, float(np.median(times)), f"{what} {note}".strip())

    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    home_center, home_zoom = tuple(cam.center), cam.zoom
    view_w = 1920 / home_zoom

    def home():
        cam.zoom = home_zoom
        cam.center = home_center

    def pan():
        c = cam.center
        cam.center = (c[0], c[1] + view_w / 4)

    def zoom_in():
        cam.zoom = home_zoom * 8

    def zoomed_in():
        home()
        zoom_in()

    timed("redraw alone", canvas.update, note="(no change: the floor)")
    timed("pan a quarter view (whole mosaic)", pan, home)
    timed("zoom in 8x (finer level)", zoom_in, home)
    timed("zoom out to the whole mosaic", home, zoomed_in)
    timed("pan a quarter view (zoomed in 8x)", pan, zoomed_in)
    home()

    def to_conf():
        types.visible, conf.visible = False, True

    def to_types():
        types.visible, conf.visible = True, False

    timed("cell types -> confidence", to_conf, to_types)
    timed("confidence -> cell types", to_types, to_conf)

    def threshold(value):
        def act():
            ann.set_threshold(value)
            refresh_annotation_labels(types, ann)  # the dock's handler of labels_changed
        return act

    timed("threshold change (0 -> 0.5)", threshold(0.5), threshold(0.0))
    timed("threshold change (0.5 -> 0.3)", threshold(0.3), threshold(0.5))
    threshold(0.0)()
    counts = ann.counts()
    ranked = counts.drop("Unassigned", errors="ignore").sort_values(ascending=False)
    top = str(ranked.index[0])
    one = ann.cell_ids[:1]
    flip = {"n": 0}

    def edit_one_cell():
        flip["n"] += 1
        ann.assign(one, str(ranked.index[flip["n"] % 2]))
        refresh_annotation_labels(types, ann)  # as the review's accept: one cell's label changes

    timed("edit one cell (review accept)", edit_one_cell, note="assign + refresh_annotation_labels")

    def one_type():
        ann.show_only([top])
        refresh_annotation_colors(types, ann)  # the dock's handler of visibility_changed

    def all_types():
        ann.show_all()
        refresh_annotation_colors(types, ann)

    timed(f"one type shown ({top})", one_type, all_types)
    timed("all types shown again", all_types, one_type)
    all_types()
    t0 = time.perf_counter()
    add_cell_features(cells, ann.table[["cell_type", CONFIDENCE]])
    add("hover features, first (no redraw)", time.perf_counter() - t0, "add_cell_features: new columns")
    threshold(0.4)()
    draw()
    t0 = time.perf_counter()
    add_cell_features(cells, ann.table[["cell_type", CONFIDENCE]])
    add("hover features, update (no redraw)", time.perf_counter() - t0, "the dock's, after each threshold / edit")

    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    add("memory: RSS after first image (GB)", rss_open)
    add("memory: peak RSS (GB)", rss_peak)
    if args.screenshot:
        viewer.layers.selection.active = types
        draw()
        shot = Path(args.screenshot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(shot), canvas_only=False)
    print(f"\nnapari at {len(big):,} cells ({copies} copies of the section in a {grid[0]} x {grid[1]} grid, "
          f"{len(ann.categories)} types; labels: {args.labels}); Xvfb, software OpenGL")
    print(f"{'measurement':<40} {'seconds':>8}  {'note':<44} load average (1/5/15 min)")
    for name, sec, note, load in rows:
        print(f"{name:<40} {sec:8.3f}  {note:<44} {load}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cells": len(big), "grid": list(grid), "labels": args.labels,
                               "image_px": list(label_levels[0].shape), "levels": len(label_levels),
                               "rows": [{"step": n, "seconds": s, "note": note, "load": load}
                                        for n, s, note, load in rows]}, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
