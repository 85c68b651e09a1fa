"""How the ensemble's two heads are combined (issue 14), measured on every setting of benchmarks 1-3.

For every setting (panel seeds 0 and 1 as in docs/quality.md, and seed 2 as a held-out check of
the rule chosen on the others) and split seed 0-2, fits the embedding head and logistic
regressions on several expression features exactly as ``core.classify`` does (one BLAS thread,
seed 0), and scores combination rules on the query: macro-F1 before the Unknown call
("transferred"), mean over split seeds, and the difference from logistic regression on
log-normalised expression (the issue's baseline). Rules:

* ``LR``: the baseline; ``ens 0.4 (previous)``: 0.4 x embedding head + 0.6 x LR (the previous default);
* ``ramp``: the embedding weight per cell 0.4 x clip((n - 1) / 2, 0, 1) for a sentence of n genes
  (``core.classify.embedding_weights``), the expression model unchanged;
* ``+counts``: the expression model on log-normalised values beside log1p counts
  (``core.classify.expression_model_features``); ``+total``: beside log1p of the cell's total;
  ``raw``: on log1p counts alone;
* ``default``: ramp + counts (the package's default since this change).

    python benchmarks/quality_combiners.py [--panel-seeds 0,1,2]

Writes ``benchmarks/results/quality_combiners.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SEEDS = (0, 1, 2)


def _features(x, kind):
    from napari_cellama.core.classify import expression_model_features, log_counts, log_normalise

    if kind == "lognorm":
        return log_normalise(x)
    if kind == "counts":
        return expression_model_features(x)
    if kind == "raw":
        return log_counts(x)
    tot = np.log1p(np.asarray(x.sum(axis=1)).ravel())[:, None].astype(np.float32)
    return sp.hstack([log_normalise(x), sp.csr_matrix(tot)], format="csr")


def split_probabilities(rx, re_, ry, qx, qe) -> dict:
    from threadpoolctl import threadpool_limits

    from napari_cellama.core.classify import _logreg, detected_genes, fit_heads

    heads = fit_heads(re_, rx, ry, method="head")
    out = {"emb": heads.embedding_proba(qe), "n": detected_genes(qx), "cats": heads.categories}
    y = np.asarray(ry).astype(str)
    for kind in ("lognorm", "counts", "total", "raw"):
        with threadpool_limits(1):
            m = _logreg(1.0, 0, False).fit(_features(rx, kind), y)
        out[kind] = m.predict_proba(_features(qx, kind))
    return out


def rules():
    from napari_cellama.core.classify import embedding_weights

    def avg(expr, ramp):
        def rule(p):
            w = embedding_weights(p["n"], 0.4)[:, None] if ramp else 0.4
            return w * p["emb"] + (1 - w) * p[expr]
        return rule

    return {"LR": lambda p: p["lognorm"], "ens 0.4 (previous)": avg("lognorm", False), "ramp": avg("lognorm", True),
            "+counts": avg("counts", False), "+total": avg("total", False), "raw": avg("raw", False),
            "ramp +total": avg("total", True), "expression +counts alone": lambda p: p["counts"],
            "default (ramp +counts)": avg("counts", True)}


def main(argv=None) -> int:
    import _quality_data as Q
    from sklearn.metrics import f1_score

    from napari_cellama.core import Embedder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panel-seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=HERE / "results" / "quality_combiners.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    settings = []
    for ps in (int(s) for s in args.panel_seeds.split(",")):
        which = ("b1", "b2", "b3") if ps == Q.PANEL_SEED else ("b2",)
        settings += [s for s in Q.build(which, ps) if ps == Q.PANEL_SEED or f"/s{ps}" in s.name]
    Q.embed(settings, Embedder(cache=True))
    print(f"embedded {len(settings)} settings in {time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f})")
    rs = rules()
    res = {}
    for s in settings:
        per = {k: [] for k in rs}
        for _seed, (rx, re_, ry, qx, qe, qy) in s.splits(SEEDS):
            pr = split_probabilities(rx, re_, ry, qx, qe)
            for name, rule in rs.items():
                pred = pr["cats"][rule(pr).argmax(axis=1)]
                per[name].append(float(f1_score(qy, pred, labels=sorted(set(qy)), average="macro", zero_division=0)))
        res[s.name] = {"n_genes": len(s.genes), "per_seed": per, "mean": {k: float(np.mean(v)) for k, v in per.items()}}
        print(f"  {s.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res[s.name]["mean"].items()), flush=True)
    names = list(rs)
    print("\nmacro-F1 before the Unknown call, mean over split seeds (benchmark 3: one query); (diff from LR)\n")
    print("| setting | genes | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for name, e in res.items():
        m = e["mean"]
        print(f"| {name} | {e['n_genes']} | " + " | ".join(
            f"{m[k]:.3f}" + ("" if k == "LR" else f" ({m[k] - m['LR']:+.3f})") for k in names) + " |")
    wins = {k: sum(e["mean"][k] > e["mean"]["LR"] for e in res.values()) for k in names if k != "LR"}
    print("\nsettings above LR: " + ", ".join(f"{k} {v}/{len(res)}" for k, v in wins.items()))
    out = {"seconds": round(time.perf_counter() - t0, 1), "load_end": os.getloadavg(), "settings": res}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['seconds']} s, load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
