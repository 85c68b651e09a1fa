import sys; sys.path.insert(0, "/work/scratch/loto2")
from harness import *
from scipy.stats import binom
from napari_cellama.core.unknown import with_cluster_evidence
from napari_cellama.core.head_transfer import CellSet
from napari_cellama.core.co_clustering import joint_cluster_table
cases = {(c["setting"], c["seed"], c["drop"]): c for c in load()}
joint = pickle.load(open("/work/scratch/loto2/joint.pkl", "rb"))
rows = []
for j in joint:
    c = cases[(j["setting"], j["seed"], j["drop"])]
    rx, ry, qx = data(c)
    q = CellSet(np.zeros((qx.shape[0], 2)), qx, pd.RangeIndex(qx.shape[0]), clusters=c["clusters"])
    r = CellSet(np.zeros((rx.shape[0], 2)), rx, pd.RangeIndex(rx.shape[0]), labels=ry)
    # joint clusters from the dump (same Leiden as the code computes)
    tab, qcl = joint_cluster_table(qx, rx, clusters=j["jcl"])
    n_cl = len(tab)
    praw = pd.Series(tab["p_value"].to_numpy() / n_cl, index=tab["cluster"]).reindex(qcl).to_numpy()
    import napari_cellama.core.co_clustering as CC
    orig = CC.joint_enrichment
    CC.joint_enrichment = lambda a, b, clusters=None: pd.Series(tab["score"].to_numpy(), index=tab["cluster"]).reindex(qcl).to_numpy(np.float32)
    sc, extra = with_cluster_evidence(c["score"], q, r)
    CC.joint_enrichment = orig
    own = c["score"]
    rel = not np.isnan(extra["cluster_residual"]).all()
    out = {"setting": j["setting"], "seed": j["seed"], "drop": j["drop"]}
    variants = {"new": sc}
    if rel:
        variants["own"] = np.maximum(sc, 0.5 * own)
        variants["praw"] = np.maximum(sc, 0.5 * (1 - praw))
        variants["prawcap"] = np.maximum(sc, 0.5 * np.minimum(1 - praw, own + 0.7))
        variants["mix"] = np.maximum(sc, 0.45 * (1 - praw) + 0.45 * own)
    for k, v in variants.items():
        out.update({f"{k}_{m}": x for m, x in metrics(c, v).items()})
    rows.append(out)
df = pd.DataFrame(rows)
pd.set_option("display.width", 300); pd.set_option("display.max_columns", 50)
for m in ("auroc", "missing", "present"):
    print(m); print(df.groupby("setting")[[c for c in df.columns if c.endswith("_" + m)]].mean().round(3).to_string())
print(df.groupby("setting")[[c for c in df.columns if c.endswith("_present")]].max().round(3).to_string())
print(df[df.drop != ""].groupby(["setting", "drop"])[[c for c in df.columns if c.endswith("_auroc")]].mean().round(3).to_string())
