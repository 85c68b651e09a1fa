"""Dump per-cell unknown scores (cell only), labels and Leiden clusters per case, for fast
evaluation of cluster-evidence variants. Cases: (setting, split seed, dropped type or '')."""
import os, sys, pickle, time
sys.path.insert(0, "/work/wt-loto2/benchmarks")
import numpy as np
import _quality_data as Q
from quality_transfer import head_table, DROPS
from napari_cellama.core import Embedder
from napari_cellama.core.transfer_options import TransferOptions
from napari_cellama.core.fit_report import leiden_clusters

which = tuple(sys.argv[1].split(","))
pseed = int(sys.argv[2])
out = sys.argv[3]
settings = Q.build(which, panel_seed=pseed)
if "b4" in which and "b1" not in which:
    keep = sys.argv[4].split(",") if len(sys.argv) > 4 else None
    if keep:
        settings = [s for s in settings if any(k in s.name for k in keep)]
Q.embed(settings, Embedder(cache=True))
cases = []
t0 = time.time()
for s in settings:
    drops = ("",) + (DROPS if s.name.startswith("pbmc3k/") else ())
    for seed, (rx, re_, ry, qx, qe, qy) in s.splits((0, 1, 2)):
        cl = np.asarray(leiden_clusters(qx), dtype=object)
        for drop in drops:
            keepr = ry != drop
            t = head_table(rx[keepr], re_[keepr], ry[keepr], qx, qe, TransferOptions(unknown_clusters=False))
            cases.append(dict(setting=s.name, seed=seed, drop=drop, score=t["unknown_score"].to_numpy(),
                              transferred=t["transferred_type"].to_numpy(), conf=t["confidence"].to_numpy(),
                              qy=np.asarray(qy), clusters=cl))
            print(s.name, seed, drop or "-", f"{time.time()-t0:.0f}s load {os.getloadavg()[0]:.1f}", flush=True)
pickle.dump(cases, open(out, "wb"))
