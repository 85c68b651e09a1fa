"""What a save costs the GUI thread now (a snapshot) vs the whole write, and the auto-save's size.

A synthetic annotation the size of the full bone-marrow section (84,518 cells, sentences of 20
genes, 12 types), with 3 manual edits (one of 20,000 cells) and a threshold. Prints one table:
snapshot time (GUI thread, issue 17 item 4), .h5ad write time (worker thread), auto-save write
time and size. Load average printed beside the timings (2 shared cores).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_cellama._constants import CONFIDENCE, DISTANCE, SENTENCE, TRANSFERRED_TYPE
from napari_cellama.core import Annotation
from napari_cellama.io import write_h5ad
from napari_cellama.io.autosave import AutoSaver

N = 84_518


def main() -> None:
    rng = np.random.default_rng(0)
    genes = [f"GENE{i}" for i in range(477)]
    sentences = ["Top genes are " + ", ".join(rng.choice(genes, 20, replace=False)) + "." for _ in range(2000)]
    t = pd.DataFrame({TRANSFERRED_TYPE: rng.choice([f"type {i}" for i in range(12)], N),
                      CONFIDENCE: rng.random(N), DISTANCE: rng.random(N),
                      SENTENCE: rng.choice(sentences, N)}, index=[f"cell{i:06d}" for i in range(N)])
    ann = Annotation(t)
    ids = ann.cell_ids
    ann.assign(ids[:20_000], "Stromal", reason="polygon")
    ann.assign(ids[30_000:30_050], "B", reason="review", review=True)
    ann.mark_reviewed(ids[40_000:40_010])
    ann.set_threshold(0.3)
    rows = []
    from napari_cellama.core.provenance import from_snapshot

    t0 = time.perf_counter()
    parts = ann.snapshot_parts()
    rows.append(("snapshot (GUI thread)", time.perf_counter() - t0, None))
    t0 = time.perf_counter()
    snap = from_snapshot(parts)
    rows.append(("rebuild (worker)", time.perf_counter() - t0, None))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = write_h5ad(Path(tmp) / "cells.h5ad", snap)
        rows.append(("write .h5ad (worker)", time.perf_counter() - t0, p.stat().st_size))
        saver = AutoSaver(Path(tmp) / "autosave")
        t0 = time.perf_counter()
        p = saver.save(snap)
        rows.append(("auto-save (thread)", time.perf_counter() - t0, p.stat().st_size))
    load = os.getloadavg()[0]
    print(f"{N:,} cells, 3 manual edits; load average {load:.2f}")
    print(f"{'step':<24}{'seconds':>9}{'MB':>9}")
    for name, sec, size in rows:
        print(f"{name:<24}{sec:>9.3f}{'' if size is None else f'{size / 1e6:.1f}':>9}")


if __name__ == "__main__":
    main()
