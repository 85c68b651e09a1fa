import sys, numpy as np, pandas as pd, scipy.sparse as sp
sys.path.insert(0, "benchmarks")
import _quality_data as Q
from napari_cellama.core import Embedder
from napari_cellama.core.fit_report import leiden_clusters
from napari_cellama.core.co_clustering import joint_cluster_table
name, drop, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
ps = int(sys.argv[4]) if len(sys.argv) > 4 else 0
settings = [s for s in Q.build(("b4",), panel_seed=ps) if s.name == name]
Q.embed(settings, Embedder(cache=True))
s = settings[0]
for sd, (rx, re_, ry, qx, qe, qy) in s.splits((seed,)):
    keep = ry != drop
    rx, ry = rx[keep], ry[keep]
    stacked = sp.vstack([sp.csr_matrix(rx), sp.csr_matrix(qx)]).tocsr()
    cl = np.asarray(leiden_clusters(stacked, resolution=float(sys.argv[5]) if len(sys.argv) > 5 else 1.0), dtype=object)
    t, qcl = joint_cluster_table(qx, rx, cl, reference_labels=ry)
    t0, _ = joint_cluster_table(qx, rx, cl)
    t["p_global"] = t0["p_value"].to_numpy()
    rt = pd.crosstab(cl[:len(ry)], ry)
    qt = pd.crosstab(qcl, qy)
    pd.set_option("display.width", 250); pd.set_option("display.max_columns", 30)
    print(t.round(3).to_string())
    print("ref types per cluster"); print(rt.to_string())
    print("query true types per cluster"); print(qt.to_string())
