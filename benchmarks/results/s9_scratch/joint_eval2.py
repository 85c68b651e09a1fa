import sys; sys.path.insert(0, "/work/scratch/loto2")
from harness import *
from scipy.stats import binom
from napari_cellama._constants import UNKNOWN_CELL_MARGIN
cases = {(c["setting"], c["seed"], c["drop"]): c for c in load()}
joint = pickle.load(open("/work/scratch/loto2/joint.pkl", "rb"))
K35 = np.log(20) / np.log(3.5)

def co_scores(jcl, nr, level):
    isq = np.r_[np.zeros(nr, bool), np.ones(len(jcl) - nr, bool)]
    df = pd.DataFrame({"cl": jcl, "q": isq})
    g = df.groupby("cl")["q"].agg(["sum", "count"])
    nq_c, n_c = g["sum"].to_numpy(float), g["count"].to_numpy(float)
    nr_c = n_c - nq_c
    rshare = nr_c / n_c
    # typical reference share: query-cell-weighted median over clusters
    o = np.argsort(rshare); w = nq_c[o]
    typ = rshare[o][np.searchsorted(np.cumsum(w) / w.sum(), 0.5)]
    typ = min(max(typ, 1e-3), 1 - 1e-3)
    p = binom.cdf(nr_c, n_c, typ) * len(g)
    sig = 1 - np.clip(p, 0, 1)
    ratio = (typ * (n_c + 1)) / (nr_c + 1)  # expected / observed reference cells (smoothed)
    k = np.log(20) / np.log(level)
    eff = 1 - np.maximum(ratio, 1) ** -k
    per = pd.DataFrame({"sig": sig, "eff": eff, "ratio": ratio}, index=g.index)
    qcl = jcl[nr:]
    return per.reindex(qcl), typ

rows = []
for j in joint:
    c = cases[(j["setting"], j["seed"], j["drop"])]
    rx, ry, qx = data(c)
    cl = c["clusters"]
    nov = cluster_novelty(qx, cl, (rx, ry))
    ev = residual_evidence(qx, cl, (rx, ry))
    base = combine_cluster_evidence(c["score"], nov, ev.ratio)
    r = {"setting": j["setting"], "seed": j["seed"], "drop": j["drop"]}
    r.update({f"base_{k}": v for k, v in metrics(c, base).items()})
    if ev.ratio is None:
        rows.append(r); continue
    cell = np.minimum(c["score"] + UNKNOWN_CELL_MARGIN, 1.0)
    res_score = 1 - np.maximum(np.nan_to_num(ev.ratio, nan=1.0), 1.0) ** -K35
    per, typ = co_scores(j["jcl"], j["nr"], 2.0)
    sig = per["sig"].to_numpy()
    for name, sc in (("nocap", np.maximum(np.minimum(res_score, cell), sig)),
                     ("cap70", np.minimum(np.maximum(res_score, sig), np.minimum(c["score"] + 0.7, 1))),
                     ("sep70", np.maximum(np.minimum(res_score, cell), np.minimum(sig, np.minimum(c["score"] + 0.7, 1)))), ("sep60", np.maximum(np.minimum(res_score, cell), np.minimum(sig, np.minimum(c["score"] + 0.6, 1))))):
        r.update({f"{name}_{k}": v for k, v in metrics(c, sc).items()})
    for level in ():
        per, typ = co_scores(j["jcl"], j["nr"], level)
        for name, cs in (("sig", per["sig"].to_numpy()), (f"eff{level}", per["eff"].to_numpy()),
                         (f"both{level}", np.minimum(per["sig"].to_numpy(), per["eff"].to_numpy()))):
            if name == "sig" and level != 2.0:
                continue
            sc = np.minimum(np.maximum(res_score, cs), cell)
            r.update({f"{name}_{k}": v for k, v in metrics(c, sc).items()})
    r["typ"] = typ
    rows.append(r)
df = pd.DataFrame(rows)
pd.set_option("display.width", 300); pd.set_option("display.max_rows", 200); pd.set_option("display.max_columns", 50)
df.to_pickle("/work/scratch/loto2/joint_eval.pkl")
cols = [c for c in df.columns if c.endswith("_present")]
print(df[["setting", "seed", "drop"] + cols].round(3).to_string())
for m in ("auroc", "missing", "present"):
    print(m); print(df.groupby("setting")[[c for c in df.columns if c.endswith("_" + m)]].mean().round(3).to_string())
print(df.groupby("setting")[[c for c in df.columns if c.endswith("_present")]].max().round(3).to_string())
