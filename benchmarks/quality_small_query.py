"""The Unknown call on small queries (issue 14, known weakness): pbmc68k_reduced 50/50 splits
(350 query cells, 10 types, all 765 genes, Leiden clusters of the query), one type left out of
the reference in turn. Per case: AUROC of ``unknown_score`` for "type missing", the share of
missing / present cells called Unknown at the default level, and the query clusters that hold the
missing cells with their residual ratio (``cluster_residual``; 3.5 reaches the default level)
beside the largest ratio of a cluster without missing cells.

    python benchmarks/quality_small_query.py [--seeds 0,1] [--no-coclustering] [--joint-global-share]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DROPS = ("CD19+ B", "CD56+ NK", "CD14+ Monocyte", "Dendritic")


def main(argv=None) -> int:
    import _quality_data as Q
    from quality_transfer import head_table
    from sklearn.metrics import roc_auc_score

    from napari_cellama.core import Embedder
    from napari_cellama.core.transfer_options import TransferOptions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--no-coclustering", action="store_true", help="TransferOptions(unknown_coclustering=False)")
    p.add_argument("--joint-global-share", action="store_true",
                   help="the co-clustering test against the typical reference share alone (sixth session's rule)")
    args = p.parse_args(argv)
    if args.joint_global_share:
        from napari_cellama.core import co_clustering

        co_clustering.BY_TYPE = False
    t0 = time.perf_counter()
    s = [x for x in Q.build(("b1",)) if x.name == "pbmc68k/all"][0]
    Q.embed([s], Embedder(cache=True))
    for seed, (rx, re_, ry, qx, qe, qy) in s.splits(tuple(int(v) for v in args.seeds.split(","))):
        for drop in DROPS:
            keep = ry != drop
            options = TransferOptions(unknown_coclustering=not args.no_coclustering)
            t = head_table(rx[keep], re_[keep], ry[keep], qx, qe, options)
            miss = qy == drop
            df = pd.DataFrame({"cl": t["query_cluster"].to_numpy(), "miss": miss,
                               "unk": t["cell_type"].to_numpy() == "Unknown", "ratio": t["cluster_residual"].to_numpy()})
            g = df.groupby("cl").agg(n=("miss", "size"), miss=("miss", "sum"), unk=("unk", "sum"), ratio=("ratio", "mean"))
            holding = g[g["miss"] > 0].sort_values("miss", ascending=False)
            present_max = g[g["miss"] == 0]["ratio"].max()
            print(f"seed {seed} -{drop} ({int(miss.sum())} cells): AUROC {roc_auc_score(miss, t['unknown_score']):.3f}; "
                  f"Unknown: missing {df.unk[miss].mean():.0%}, present {df.unk[~miss].mean():.1%}; largest ratio of a "
                  f"cluster without missing cells {present_max:.2f}; call '{str(t['unknown_call'].iloc[0]).split(' - ')[0]}'")
            print("   clusters holding missing cells: " + "; ".join(
                f"{c}: {int(r.miss)}/{int(r.n)} missing, ratio {r.ratio:.2f}, {int(r.unk)} Unknown"
                for c, r in holding.head(3).iterrows()), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
