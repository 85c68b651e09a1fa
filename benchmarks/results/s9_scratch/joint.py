import sys; sys.path.insert(0, "/work/scratch/loto2")
from harness import *
import scipy.sparse as sp
from scipy.stats import binom
cases = [c for c in load() if "panel30" not in c["setting"] and "hMulti" not in c["setting"]]
res = []
for c in cases:
    rx, ry, qx = data(c)
    nr, nq = rx.shape[0], qx.shape[0]
    jcl = np.asarray(leiden_clusters(sp.vstack([rx, qx]).tocsr()), dtype=object)
    isq = np.r_[np.zeros(nr, bool), np.ones(nq, bool)]
    p0 = nq / (nr + nq)
    df = pd.DataFrame({"cl": jcl, "q": isq})
    g = df.groupby("cl")["q"].agg(["sum", "count"])
    g["share"] = g["sum"] / g["count"]
    # p-value of seeing >= sum query cells of count under p0
    g["p"] = binom.sf(g["sum"] - 1, g["count"], p0)
    qcl = jcl[nr:]
    miss = c["qy"] == c["drop"]
    g["miss"] = pd.Series(miss).groupby(qcl).mean().reindex(g.index).fillna(0)
    g = g.sort_values("share", ascending=False)
    top = g.head(4)
    s = " ; ".join(f"{int(r['count'])}:{r['share']:.2f}/m{r['miss']:.2f}/p{r['p']:.0e}" for _, r in top.iterrows())
    print(f"{c['setting']:20s} s{c['seed']} {c['drop'] or '-':11s} ncl {len(g)} p0 {p0:.2f} | {s}", flush=True)
    res.append(dict(setting=c["setting"], seed=c["seed"], drop=c["drop"], jcl=jcl, nr=nr))
pickle.dump(res, open("/work/scratch/loto2/joint.pkl", "wb"))
