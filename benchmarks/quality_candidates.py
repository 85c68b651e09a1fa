"""How the default of issue 14 was chosen: candidate classifiers on benchmarks 1-3 (and a second
choice of the 150/30-gene panels), macro-F1 mean over seeds 0-2, sorted by the worst difference
to logistic regression on log-normalised expression (``LR_expr``, the issue's baseline).

Candidates (all scikit-learn ``LogisticRegression``; probabilities averaged with weight ``w`` on
the embedding head): ``head_C*`` on unit sentence embeddings (``headb``: classes balanced),
``headstd`` on per-dataset standardised embeddings, ``LR_std`` on per-dataset standardised
log-expression, ``LRb`` balanced, ``geo`` = product of probabilities, ``+knn`` = three-way average
with the kNN vote (k=10) shares.

    python benchmarks/quality_candidates.py   # ~10 min on 2 busy cores, embeddings from the cache
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def candidate_probabilities(s, seeds=(0, 1, 2)) -> dict:
    from sklearn.linear_model import LogisticRegression

    from napari_cellama.core.classify import log_normalise, standardise
    from napari_cellama.core.transfer import cosine_knn, l2_normalise

    out = {}
    for seed, (rx, re_, ry, qx, qe, qy) in s.splits(seeds):
        cats, P = np.unique(ry), {}
        idx, sim = cosine_knn(qe, re_, 10)
        w = 1 / (1 - sim + 1e-3)
        votes = np.zeros((len(qe), len(cats)))
        np.add.at(votes, (np.repeat(np.arange(len(qe)), 10), np.searchsorted(cats, ry)[idx].ravel()), w.ravel())
        P["knn10"] = votes / votes.sum(1, keepdims=True)
        rl, ql = log_normalise(rx), log_normalise(qx)
        P["LR_expr"] = LogisticRegression(max_iter=10000).fit(rl, ry).predict_proba(ql)
        P["LRb_C1"] = LogisticRegression(max_iter=5000, class_weight="balanced").fit(rl, ry).predict_proba(ql)
        rs, qs = standardise(rl), standardise(ql)
        P["LR_std_C1"] = LogisticRegression(max_iter=5000).fit(rs, ry).predict_proba(qs)
        ru, qu = l2_normalise(re_), l2_normalise(qe)
        for c in (10, 100, 1000):
            P[f"head_C{c}"] = LogisticRegression(C=c, max_iter=5000).fit(ru, ry).predict_proba(qu)
        P["headb_C100"] = LogisticRegression(C=100, max_iter=5000, class_weight="balanced").fit(ru, ry).predict_proba(qu)
        P["headstd_C1"] = LogisticRegression(max_iter=5000).fit(standardise(ru), ry).predict_proba(standardise(qu))
        out[seed] = (cats, qy, P)
        print(f"  {s.name} seed {seed}", flush=True)
    return out


def combos() -> dict:
    c = {b: (lambda P, b=b: P[b]) for b in ("knn10", "LR_expr", "LRb_C1", "LR_std_C1", "head_C10", "head_C100",
                                            "head_C1000", "headb_C100", "headstd_C1")}
    for e in ("head_C100", "headb_C100", "head_C1000", "headstd_C1"):
        for x in ("LR_expr", "LR_std_C1", "LRb_C1"):
            for w in (0.3, 0.4, 0.5, 0.6, 0.7):
                c[f"{e}*{w}+{x}"] = lambda P, e=e, x=x, w=w: w * P[e] + (1 - w) * P[x]
            c[f"geo {e}+{x}"] = lambda P, e=e, x=x: np.log(P[e] + 1e-9) + np.log(P[x] + 1e-9)
        c[f"{e}+LR_expr+knn10"] = lambda P, e=e: (P[e] + P["LR_expr"] + P["knn10"]) / 3
    return c


def main() -> int:
    import _quality_data as Q
    from sklearn.metrics import f1_score

    from napari_cellama.core import Embedder

    settings = Q.build(("b1", "b2", "b3")) + [s for s in Q.build(("b2",), panel_seed=1) if "/s1" in s.name]
    Q.embed(settings, Embedder(cache=True))
    scores: dict = {}
    for s in settings:
        for cats, y, P in candidate_probabilities(s).values():
            for name, fn in combos().items():
                pred = cats[fn(P).argmax(1)]
                scores.setdefault(name, {}).setdefault(s.name, []).append(
                    f1_score(y, pred, labels=sorted(set(y)), average="macro", zero_division=0))
    names = [s.name for s in settings]
    base = {n: np.mean(scores["LR_expr"][n]) for n in names}
    rows = sorted(((min(np.mean(d[n]) - base[n] for n in names), c, [np.mean(d[n]) for n in names])
                   for c, d in scores.items()), key=lambda t: -t[0])
    print("\n| candidate | " + " | ".join(names) + " | worst - LR_expr |")
    print("|---" * (len(names) + 2) + "|")
    for worst, c, m in rows:
        print(f"| {c} | " + " | ".join(f"{v:.3f}" for v in m) + f" | {worst:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
