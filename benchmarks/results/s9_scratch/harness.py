import sys, pickle, functools
sys.path.insert(0, "/work/wt-loto2/benchmarks")
import numpy as np, pandas as pd
import _quality_data as Q
from sklearn.metrics import roc_auc_score
from napari_cellama.core.cluster_evidence import cluster_detection, cluster_residual, cluster_novelty
from napari_cellama.core.unknown import residual_evidence, detection_evidence, combine_cluster_evidence
from napari_cellama.core.fit_report import leiden_clusters

def load(which=("p0", "p1", "b13")):
    cases = []
    for w in which:
        cases += pickle.load(open(f"/work/scratch/loto2/cases_{w}.pkl", "rb"))
    return cases

@functools.lru_cache(None)
def _settings(pseed, b13=False):
    if b13:
        ss = Q.build(("b1", "b3"))
    else:
        ss = Q.build(("b4",), panel_seed=pseed)
    return {s.name: s for s in ss}

def data(c):
    name = c["setting"]
    if name.startswith("pbmc68k") or "->" in name:
        s = _settings(0, True)[name]
    else:
        s = _settings(1 if "/s1" in name else 0)[name]
    if s.query_counts is not None:
        rx, ry, qx = s.ref_counts, s.ref_labels, s.query_counts
    else:
        from sklearn.model_selection import train_test_split
        idx = np.arange(len(s.ref_labels))
        tr, te = train_test_split(idx, test_size=0.5, stratify=s.ref_labels, random_state=c["seed"])
        tr, te = np.sort(tr), np.sort(te)
        rx, ry, qx = s.ref_counts[tr], s.ref_labels[tr], s.ref_counts[te]
    keep = ry != c["drop"]
    return rx[keep], ry[keep], qx

def typical(v, w):
    ok = ~np.isnan(v)
    v, w = v[ok], w[ok]
    o = np.argsort(v, kind="stable")
    return float(v[o][np.searchsorted(np.cumsum(w[o]) / w.sum(), 0.5)])

def metrics(c, score, alpha=0.05):
    miss = c["qy"] == c["drop"]
    unk = score > 1 - alpha
    out = {"present": float(unk[~miss].mean())}
    if miss.any():
        out["auroc"] = float(roc_auc_score(miss, score))
        out["missing"] = float(unk[miss].mean())
    return out
