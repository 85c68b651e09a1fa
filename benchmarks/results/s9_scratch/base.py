import sys; sys.path.insert(0, "/work/scratch/loto2")
from harness import *
cases = load()
rows = []
for c in cases:
    rx, ry, qx = data(c)
    ref = (rx, ry)
    cl = c["clusters"]
    nov = cluster_novelty(qx, cl, ref)
    ev = residual_evidence(qx, cl, ref)
    base = combine_cluster_evidence(c["score"], nov, ev.ratio)
    r = {"setting": c["setting"], "seed": c["seed"], "drop": c["drop"], "call": ev.call[:8]}
    r.update({f"base_{k}": v for k, v in metrics(c, base).items()})
    if ev.ratio is not None:
        det = detection_evidence(qx, cl, ref)
        dd = combine_cluster_evidence(c["score"], nov, np.fmax(ev.ratio, det))
        r.update({f"det_{k}": v for k, v in metrics(c, dd).items()})
    rows.append(r)
df = pd.DataFrame(rows)
pd.set_option("display.width", 250); pd.set_option("display.max_rows", 200)
print(df.round(3).to_string())
print(df.groupby("setting").mean(numeric_only=True).round(3))
df.to_pickle("/work/scratch/loto2/base.pkl")
