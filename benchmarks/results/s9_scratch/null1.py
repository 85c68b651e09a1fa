import sys; sys.path.insert(0, "/work/scratch/loto2")
from harness import *
from sklearn.model_selection import train_test_split
cases = [c for c in load() if "panel150" in c["setting"] or "panel477" in c["setting"] or c["setting"].startswith("pbmc68k/all") or "->" in c["setting"]]

def ratios(qx, cl, ref):
    d = cluster_detection(qx, cl, ref)
    t = typical(d["deviance"].to_numpy(), d["n_cells"].to_numpy(float))
    return d, d["deviance"].to_numpy() / max(t, 0.1)

res = []
for c in cases:
    rx, ry, qx = data(c)
    cl = c["clusters"]
    d, qr = ratios(qx, cl, (rx, ry))
    miss = c["qy"] == c["drop"]
    share = pd.Series(miss).groupby(np.asarray(cl)).mean().reindex(d["cluster"]).to_numpy()
    # null: in-sample
    rcl = np.asarray(leiden_clusters(rx), dtype=object)
    _, nin = ratios(rx, rcl, (rx, ry))
    # cross-fit halves
    idx = np.arange(len(ry))
    a, b = train_test_split(idx, test_size=0.5, stratify=ry, random_state=0)
    ncf = []
    for h, o in ((a, b), (b, a)):
        hcl = np.asarray(leiden_clusters(rx[h]), dtype=object)
        _, r = ratios(rx[h], hcl, (rx[o], ry[o]))
        ncf.append(r)
    ncf = np.concatenate(ncf)
    pres = qr[share < 0.5]; mis = qr[share >= 0.5]
    print(f"{c['setting']:20s} s{c['seed']} {c['drop'] or '-':11s} present max {np.nanmax(pres):5.1f} top3 {np.round(np.sort(pres[~np.isnan(pres)])[-3:],1)} "
          f"| missing {np.round(mis,1)} | null in max {np.nanmax(nin):5.1f} q90 {np.nanquantile(nin,0.9):4.1f} | crossfit max {np.nanmax(ncf):5.1f} q90 {np.nanquantile(ncf,0.9):4.1f} n{len(ncf)}", flush=True)
    res.append(dict(setting=c["setting"], seed=c["seed"], drop=c["drop"], qr=qr, share=share, nin=nin, ncf=ncf))
pickle.dump(res, open("/work/scratch/loto2/null1.pkl", "wb"))
