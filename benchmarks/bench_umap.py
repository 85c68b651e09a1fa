"""Time of the plots panel's UMAP on the full bone-marrow section (issue 17 item 11).

What is measured, on the real section (84,518 cells, embeddings of the default transfer with
the pbmc3k reference, read from the embedding cache when ``NAPARI_CELLAMA_CACHE`` holds it):

* ``fit + place``: :func:`napari_cellama.core.embedding_map.embedding_map_of` - UMAP fitted on
  at most 5,000 cells (query and reference in proportion), every other query cell placed by its
  5 nearest fitted cells (the map the dock draws);
* ``second draw``: the map kept for that result (:func:`cached_map`), what every later draw
  of the same result costs;
* ``old (20,000-point UMAP)`` with ``--old``: the previous map (a UMAP of a 20,000-point
  subsample, the other cells not shown), computed again on every draw.

The first UMAP in a process includes numba's compilation (~30 s on 2 loaded cores, and
another for the NN-descent path above 4,096 points); ``--warm`` fits a 4,500-point map of
random 8-D points first so that the figures are the steady-state cost. The load average is printed beside
the timings (2 shared cores: timings scale with it).

    NAPARI_CELLAMA_CACHE=/work/cache python benchmarks/bench_umap.py --warm [--old]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("CELLAMA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xenium", default=str(SHARED / "xenium_bone_marrow"))
    ap.add_argument("--reference", default=str(SHARED / "references" / "pbmc3k" / "pbmc3k.h5ad"))
    ap.add_argument("--old", action="store_true", help="also time the previous 20,000-point UMAP")
    ap.add_argument("--warm", action="store_true", help="compile numba first (steady-state timings)")
    args = ap.parse_args()

    from napari_cellama.core import run_transfer
    from napari_cellama.core.embedding_map import cached_map, embedding_map_of, store_map
    from napari_cellama.io import read_query, read_reference

    t = time.perf_counter()
    result = run_transfer(read_query(args.xenium), read_reference(args.reference), "cell_type", cache=True)
    q, r = result.query_embeddings, result.reference_embeddings
    print(f"transfer (embeddings from the cache when warm): {time.perf_counter() - t:.1f} s; "
          f"{len(q):,} query + {len(r):,} reference embeddings; load {load()}")
    if args.warm:
        rng = np.random.default_rng(0)
        # above 4,096 points UMAP searches neighbours with NN-descent: compile that path too
        embedding_map_of(rng.normal(size=(4500, 8)).astype(np.float32), max_fit=4500)
        print(f"numba warm-up done; load {load()}")
    rows = []
    t = time.perf_counter()
    emap = embedding_map_of(q, r)
    rows.append(("fit + place", time.perf_counter() - t, emap.note))
    store_map(result, emap)
    t = time.perf_counter()
    again = cached_map(result)
    rows.append(("second draw (kept map)", time.perf_counter() - t, "same map" if again is emap else "MISSING"))
    if args.old:
        from napari_cellama.core.summaries import embedding_map

        t = time.perf_counter()
        old = embedding_map(q, r)
        rows.append(("old (20,000-point UMAP)", time.perf_counter() - t, f"{len(old):,} points, every draw"))
    print(f"\n{'step':<26} {'seconds':>8}  what")
    for name, sec, what in rows:
        print(f"{name:<26} {sec:8.2f}  {what}")
    print(f"load average after: {load()} (2 shared cores)")


if __name__ == "__main__":
    main()
