"""Time to first image and peak memory when napari opens a Xenium run through the reader.

    xvfb-run -a python benchmarks/bench_open_xenium.py            # the full 84,518-cell section
    xvfb-run -a python benchmarks/bench_open_xenium.py PATH ...   # other runs

Each run is measured in a fresh Python process with a napari viewer already open (so
napari's own start-up is excluded, but the plugin's first import of spatialdata-io is
included, as a user pays it on the first drop). Per run it prints:

* ``cold open``: ``viewer.open(path, plugin="napari-cellama")`` returns (reader + layer creation);
* ``first image``: from the same start until the first rendered canvas shows the tissue
  (a screenshot of the canvas that is not blank);
* ``warm open``: the same again after removing the layers (imports and caches warm);
* ``peak RSS``: the process's maximum resident memory (``getrusage``), and its increase
  over the viewer alone;
* ``recolour``: painting every cell by a category with the lookup layer of
  :mod:`napari_cellama.layers` (build, update all cells, hide one category), against one
  ``DirectLabelColormap`` entry per cell.

Target (issue 3): first image of the full section <= 30 s on the project's 2-core machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "xenium_bone_marrow"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(path: str) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import napari
    import numpy as np
    import pandas as pd
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    for _ in range(10):
        QApplication.processEvents()
    base_rss = _rss_mb()
    out = {"path": path}

    t0 = time.perf_counter()
    layers = viewer.open(path, plugin="napari-cellama")
    out["cold_open_s"] = time.perf_counter() - t0
    shot = viewer.screenshot(canvas_only=True, flash=False)
    out["first_image_s"] = time.perf_counter() - t0
    out["blank"] = bool(shot[..., :3].std() < 5)
    cells = next(layer for layer in layers if type(layer).__name__ == "Labels")
    out["n_cells"] = len(cells.features)

    # recolouring every cell (issue 4 needs this to be cheap)
    from napari.utils.colormaps import DirectLabelColormap

    from napari_cellama.layers import cell_categories_layer_data, lookup_table, set_category_colors

    feats = cells.features
    rng = np.random.default_rng(0)
    names = np.array([f"type {i}" for i in range(12)])
    cats = names[rng.integers(0, 12, len(feats))]
    t = time.perf_counter()
    data, kwargs, kind = cell_categories_layer_data(cells, feats["cell_id"], cats)
    cat_layer = viewer.add_layer(napari.layers.Layer.create(data, kwargs, kind))
    viewer.screenshot(canvas_only=True, flash=False)
    out["categories_layer_s"] = time.perf_counter() - t
    cats2 = names[rng.integers(0, 12, len(feats))]
    t = time.perf_counter()
    code_of = pd.Index(cat_layer.metadata["cellama"]["categories"])  # every cell a new category, in place
    lookup_table(cat_layer)[feats["index"].to_numpy()] = code_of.get_indexer(cats2) + 1
    cat_layer.refresh()
    viewer.screenshot(canvas_only=True, flash=False)
    out["recategorise_all_s"] = time.perf_counter() - t
    t = time.perf_counter()
    set_category_colors(cat_layer, hidden=["type 3"])
    viewer.screenshot(canvas_only=True, flash=False)
    out["hide_category_s"] = time.perf_counter() - t
    palette = rng.random((12, 4))
    palette[:, 3] = 1
    t = time.perf_counter()
    per_cell = palette[rng.integers(0, 12, len(feats))]
    cells.colormap = DirectLabelColormap(
        color_dict={**dict(zip(feats["index"].tolist(), per_cell)), 0: np.zeros(4), None: np.zeros(4)}
    )
    viewer.screenshot(canvas_only=True, flash=False)
    out["direct_colormap_s"] = time.perf_counter() - t

    viewer.layers.clear()
    for _ in range(5):
        QApplication.processEvents()
    t0 = time.perf_counter()
    viewer.open(path, plugin="napari-cellama")
    out["warm_open_s"] = time.perf_counter() - t0
    viewer.screenshot(canvas_only=True, flash=False)
    out["warm_first_image_s"] = time.perf_counter() - t0

    out["viewer_rss_mb"] = base_rss
    out["peak_rss_mb"] = _rss_mb()
    viewer.close()
    return out


def main(paths: list[str]) -> int:
    if not paths:
        paths = [str(FULL)]
    results = []
    for path in paths:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", path],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"benchmark of {path} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(lines[-1]))
    rows = [
        ("cells", lambda r: f"{r['n_cells']:,}"),
        ("cold open (s)", lambda r: f"{r['cold_open_s']:.1f}"),
        (
            "first image, cold (s)",
            lambda r: f"{r['first_image_s']:.1f}" + (" BLANK" if r["blank"] else ""),
        ),
        ("warm open (s)", lambda r: f"{r['warm_open_s']:.1f}"),
        ("first image, warm (s)", lambda r: f"{r['warm_first_image_s']:.1f}"),
        ("viewer alone RSS (MB)", lambda r: f"{r['viewer_rss_mb']:.0f}"),
        ("peak RSS (MB)", lambda r: f"{r['peak_rss_mb']:.0f}"),
        ("peak RSS over viewer (MB)", lambda r: f"{r['peak_rss_mb'] - r['viewer_rss_mb']:.0f}"),
        ("category layer, all cells (s)", lambda r: f"{r['categories_layer_s']:.2f}"),
        ("re-categorise all cells (s)", lambda r: f"{r['recategorise_all_s']:.2f}"),
        ("hide one category (s)", lambda r: f"{r['hide_category_s']:.2f}"),
        ("DirectLabelColormap, per cell (s)", lambda r: f"{r['direct_colormap_s']:.2f}"),
    ]
    names = [Path(r["path"]).name for r in results]
    width = max(len(n) for n in names + ["run"]) + 2
    print(f"{'':36}" + "".join(f"{n:>{width}}" for n in names))
    for label, fmt in rows:
        print(f"{label:36}" + "".join(f"{fmt(r):>{width}}" for r in results))
    print(f"\nmachine: {os.cpu_count()} CPU cores; target: first image (cold) <= 30 s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
