"""Speed of the review state (``napari_cellama.core.Annotation``) at whole-section size.

Issue 4 asks that switching what is shown (type filter, threshold, manual edit) never
recomputes embeddings and that recolouring 100k cells takes well under a second. Every
interaction of the dock ends in one of the lookups timed here:

* ``label_code_lut()`` + ``type_color_dict()``: a type raster and a colormap with one entry
  per type (the route of the dock's ``cell types`` layer, where show / hide only swaps a
  ~20-entry colormap);
* for comparison, a per-cell RGBA dict (``{label: RGBA}``, the ``DirectLabelColormap`` with
  one entry per cell that the dock does not use), built here from ``category_rgba()``.

Cases:

* **Xenium section**: the 84,518 real cell ids and Labels ids of the human bone-marrow
  section (``/work/shared/data/xenium_bone_marrow/cells.zarr.zip``, read with
  spatialdata-io's rules: label of cell row ``i`` is ``polygon_sets/1/cell_index`` position
  + 1), with a synthetic transfer table (20 types, random confidence / distance: values do
  not change the cost). The type raster is painted on the section's real 4096 x 4096
  mask chunk (``masks/1``).
* **100k cells**: 100,000 synthetic cells with shuffled label ids.

Each step is the median of ``--runs`` runs (default 5). With napari installed, the cost of
building ``napari.utils.colormaps.DirectLabelColormap`` from each route's dict is printed
too (napari's own cost, not ours).

Run from the repository root::

    python benchmarks/bench_annotation.py        # ~30 s on 2 CPU cores

Results are also written to ``benchmarks/results/bench_annotation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_cellama._constants import CONFIDENCE, DISTANCE, RUNNER_UP, TRANSFERRED_TYPE, UNASSIGNED
from napari_cellama.core import Annotation

SHARED = Path(os.environ.get("CELLAMA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TYPES = np.array([f"type {i:02d}" for i in range(20)], dtype=object)


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def section_ids(xenium: Path):
    """Real cell ids, label ids and one 4096 x 4096 mask chunk of a Xenium section."""
    import zarr

    z = zarr.open_group(zarr.storage.ZipStore(xenium / "cells.zarr.zip", mode="r"), mode="r")
    # cells.parquet rows are the rows of cells.zarr.zip's cell_id array (as spatialdata-io checks)
    ids = pd.read_parquet(xenium / "cells.parquet", columns=["cell_id"])["cell_id"].astype(str).to_numpy()
    cell_index = z["polygon_sets/1/cell_index"][...]
    labels = np.empty(len(ids), dtype=np.int64)
    labels[cell_index] = np.arange(1, len(cell_index) + 1)
    mask = z["masks/1"]
    chunk = np.asarray(mask[: min(4096, mask.shape[0]), : min(4096, mask.shape[1])])
    return ids, labels, chunk


def synthetic_table(ids: np.ndarray, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(ids)
    return pd.DataFrame({
        TRANSFERRED_TYPE: TYPES[rng.integers(0, len(TYPES), n)],
        CONFIDENCE: rng.random(n).astype(np.float32),
        DISTANCE: (rng.random(n) * 0.6).astype(np.float32),
        RUNNER_UP: TYPES[rng.integers(0, len(TYPES), n)],
    }, index=pd.Index(ids, name="cell_id"))


def bench_case(name: str, ids, labels, raster, runs: int, napari_cmap) -> list[dict]:
    rows = []
    table = synthetic_table(ids)

    def row(step, seconds, note=""):
        rows.append({"case": name, "cells": len(ids), "step": step, "median_s": seconds, "note": note})

    t = time.perf_counter()
    ann = Annotation(table, label_ids=labels)
    row("build Annotation (once per run)", time.perf_counter() - t)
    def lookups():
        return ann.label_code_lut(), ann.type_color_dict()

    def per_cell_dict():
        return dict(zip(ann.label_ids.tolist(), ann.category_rgba()[ann.codes()]))

    step = "+ label_code_lut() + type_color_dict()"
    thresholds = iter(np.linspace(0.05, 0.95, 1000))
    row(f"threshold change {step}", timed(lambda: (ann.set_threshold(next(thresholds), 0.5), lookups()), runs))
    names = iter(TYPES.tolist() * 100)
    row(f"hide one type {step}", timed(lambda: (ann.set_visible(next(names), False), lookups()), runs))
    row(f"show only one type {step}", timed(lambda: (ann.show_only(next(names)), lookups()), runs))
    ann.show_all()
    rng = np.random.default_rng(1)
    picks = iter([ann.cell_ids[rng.choice(len(ids), 1000, replace=False)] for _ in range(runs)])
    row(f"manual edit of 1,000 cells {step}", timed(lambda: (ann.assign(next(picks), "edited"), lookups()), runs))
    row(f"undo {step}", timed(lambda: (ann.undo(), lookups()), runs))
    row("label_code_lut() (type raster route)", timed(ann.label_code_lut, runs))
    row("type_color_dict() (type raster route)", timed(ann.type_color_dict, runs), f"{len(ann.categories)} entries")
    row("per-cell RGBA dict (for comparison)", timed(per_cell_dict, runs), f"{len(ids) + 1} entries")
    if raster is not None:
        lut = ann.label_code_lut()
        lut_full = np.zeros(max(int(raster.max()) + 1, len(lut)), dtype=lut.dtype)
        lut_full[: len(lut)] = lut
        row(f"paint type raster lut[mask] ({raster.shape[0]}x{raster.shape[1]} px)",
            timed(lambda: lut_full[raster], runs), f"{raster.size / 1e6:.1f} Mpx")
    if napari_cmap is not None:
        d_types = ann.type_color_dict()
        row("napari DirectLabelColormap(type_color_dict)", timed(lambda: napari_cmap(color_dict=d_types), runs),
            "napari's cost")
        d_cells = per_cell_dict()
        d_cells[None] = np.zeros(4, np.float32)
        row("napari DirectLabelColormap(label_color_dict)",
            timed(lambda: napari_cmap(color_dict=d_cells), max(1, runs // 2)), "napari's cost")
    assert ann.counts().get(UNASSIGNED, 0) >= 0
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--xenium", type=Path, default=SHARED / "xenium_bone_marrow")
    ap.add_argument("--cells", type=int, default=100_000, help="cells of the synthetic case")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-napari", action="store_true", help="skip napari's DirectLabelColormap timing")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_annotation.json")
    args = ap.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    napari_cmap = None
    if not args.no_napari:
        try:
            from napari.utils.colormaps import DirectLabelColormap as napari_cmap  # noqa: N813
        except ImportError:
            napari_cmap = None
    rows = []
    if (args.xenium / "cells.zarr.zip").exists():
        ids, labels, chunk = section_ids(args.xenium)
        rows += bench_case(f"Xenium section ({args.xenium.name})", ids, labels, chunk, args.runs, napari_cmap)
    else:
        print(f"skipping the Xenium case: {args.xenium}/cells.zarr.zip not found", file=sys.stderr)
    n = args.cells
    ids = np.array([f"cell{i}" for i in range(n)])
    labels = np.random.default_rng(2).permutation(n) + 1
    rows += bench_case(f"synthetic {n:,} cells", ids, labels, None, args.runs, napari_cmap)

    print(f"load average at start: {load:.1f}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; median of {args.runs} runs\n")
    print("| case | cells | step | median ms | note |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['cells']:,} | {r['step']} | {1000 * r['median_s']:.1f} | {r['note']} |")
    interactive = [r for r in rows if "+ label_code_lut()" in r["step"]]
    worst = max(interactive, key=lambda r: r["median_s"])
    print(f"\nslowest interaction (change + type lookup and colormap): {1000 * worst['median_s']:.1f} ms "
          f"({worst['step']}, {worst['cells']:,} cells); target well under 1 s: "
          f"{'met' if worst['median_s'] < 0.25 else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average": load, "runs": args.runs, "python": platform.python_version(),
                                    "numpy": np.__version__, "pandas": pd.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
