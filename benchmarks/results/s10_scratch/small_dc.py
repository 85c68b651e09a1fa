"""Scratch: the small-query case (pbmc68k, Dendritic left out, split seed 0): which joint clusters make present cells Unknown."""
import sys
import numpy as np, pandas as pd, scipy.sparse as sp
sys.path.insert(0, "benchmarks")
import _quality_data as Q
from quality_transfer import head_table
from napari_cellama.core import Embedder
from napari_cellama.core.transfer_options import TransferOptions
from napari_cellama.core.fit_report import leiden_clusters
from napari_cellama.core.co_clustering import joint_cluster_table
drop = sys.argv[1] if len(sys.argv) > 1 else "Dendritic"
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
s = [x for x in Q.build(("b1",)) if x.name == "pbmc68k/all"][0]
Q.embed([s], Embedder(cache=True))
for sd, (rx, re_, ry, qx, qe, qy) in s.splits((seed,)):
    keep = ry != drop
    t = head_table(rx[keep], re_[keep], ry[keep], qx, qe, TransferOptions(unknown_coclustering=True))
    stacked = sp.vstack([sp.csr_matrix(rx[keep]), sp.csr_matrix(qx)]).tocsr()
    cl = np.asarray(leiden_clusters(stacked), dtype=object)
    tab, qcl = joint_cluster_table(qx, rx[keep], cl, reference_labels=ry[keep])
    pd.set_option("display.width", 250); pd.set_option("display.max_columns", 30)
    print(tab.round(3).to_string())
    unk = t["cell_type"].to_numpy() == "Unknown"
    df = pd.DataFrame({"jc": qcl, "true": qy, "pred": t["transferred_type"].to_numpy(), "unk": unk,
                       "joint": t["joint_enrichment"].to_numpy(), "score": t["unknown_score"].to_numpy()})
    print(pd.crosstab(df.jc, df.true).to_string())
    print(pd.crosstab(cl[:keep.sum()], ry[keep]).to_string())
    bad = df[(df.true != drop) & df.unk]
    print("present Unknown:", len(bad), "of", (df.true != drop).sum()); print(bad.groupby(["jc", "true", "pred"]).size().to_string())
