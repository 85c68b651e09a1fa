"""Quality of label transfer (issue 14): benchmarks 1-4, printed as tables.

1. pbmc68k_reduced 50/50 stratified splits (all 765 genes; the 47 genes of the hMulti panel).
2. pbmc3k 50/50 stratified splits on the bone-marrow Xenium panel (458 shared genes) and on
   seeded samples of 150 and 30 of its genes (``_quality_data.panel_subset``; ``--panel-seed``).
3. pbmc3k as reference -> pbmc68k as query on their shared genes, coarse types
   (``_quality_data.COARSE``).
4. Leave-one-type-out on 2 (B, NK, CD14+ Mono, CD8 T removed from the reference in turn):
   AUROC of ``unknown_score`` (and of 1 - confidence) for "type missing", and the share of
   missing-type / present-type cells called Unknown at the default and other levels.

Methods: the package's ``knn`` (k=10 default, k=1 the paper's), ``head`` and ``ensemble``
(the default), each through :func:`napari_cellama.core.head_transfer.iter_head_transfer` /
:func:`knn_transfer` on cached sentence embeddings; the baseline is scikit-learn's
``LogisticRegression(max_iter=10000)`` on log-normalised expression of the same genes.
Macro-F1 is over the true types of the query (a cell called Unknown counts as a miss; Unknown is
not a class). ``transferred`` = before the Unknown call, ``cell_type`` = after it. Seeds 0, 1, 2
(splits); benchmark 3 has one fixed query.

Run from the repository root (embeddings come from $NAPARI_CELLAMA_CACHE when present)::

    python benchmarks/quality_transfer.py [--only b1,b2,b3,b4] [--panel-seed 0] [--no-cluster-evidence] [--detection]
        [--coclustering | --no-coclustering] [--ref-cap N [--ref-cap-type TYPE]]

``--ref-cap N`` is the composition-shift check: the reference half keeps at most N cells per type
(a seeded sample), so the query holds the common types many times as often as the reference;
with ``--ref-cap-type TYPE`` only that type is capped (a type rare in the reference, common in the query).

The Unknown levels of the per-level columns are ``$QUALITY_ALPHAS`` (default 0.01,0.02,0.05,0.1,0.2,0.3).

Writes ``benchmarks/results/quality_transfer[_panelseedN].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SEEDS = (0, 1, 2)
OPTIONS = {}
"""TransferOptions fields set from the command line (``--no-cluster-evidence``)."""
REF_CAP = {"cap": None}
"""``--ref-cap N``: the reference half keeps at most N cells per type (a seeded sample), the query
half is whole - a composition shift like a per-type-capped reference (``--max-per-type``)."""


def cap_reference(split, seed):
    """The split with its reference capped per type (``REF_CAP``; unchanged without a cap)."""
    cap, only = REF_CAP["cap"], REF_CAP.get("type")
    if not cap:
        return split
    rx, re_, ry, qx, qe, qy = split
    rng = np.random.default_rng(0 if seed is None else seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ry == t))[:cap if only in (None, t) else None]
                                   for t in np.unique(ry)]))
    return rx[keep], re_[keep], ry[keep], qx, qe, qy
DROPS = ("B", "NK", "CD14+ Mono", "CD8 T")
ALPHAS = tuple(float(a) for a in os.environ.get("QUALITY_ALPHAS", "0.01,0.02,0.05,0.1,0.2,0.3").split(","))


def macro_f1(y, pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=sorted(set(y)), average="macro", zero_division=0))


def head_table(rx, re_, ry, qx, qe, options):
    import pandas as pd

    from napari_cellama.core._progress import run
    from napari_cellama.core.head_transfer import CellSet, iter_head_transfer

    q = CellSet(qe, qx, pd.RangeIndex(len(qe)))
    r = CellSet(re_, rx, pd.RangeIndex(len(re_)), labels=np.asarray(ry))
    return run(iter_head_transfer(q, r, options))


def evaluate_setting(s, seeds) -> dict:
    from sklearn.linear_model import LogisticRegression

    from napari_cellama.core import knn_transfer
    from napari_cellama.core.classify import log_normalise
    from napari_cellama.core.transfer_options import TransferOptions

    rows = []
    for seed, split in s.splits(seeds):
        rx, re_, ry, qx, qe, qy = cap_reference(split, seed)
        out = {"seed": seed}
        for k in (1, 10):
            out[f"knn k={k}"] = macro_f1(qy, knn_transfer(qe, re_, ry, k=k)["cell_type"])
        lr = LogisticRegression(max_iter=10000).fit(log_normalise(rx), ry)
        out["logistic regression (expression)"] = macro_f1(qy, lr.predict(log_normalise(qx)))
        for method in ("head", "ensemble"):
            t = head_table(rx, re_, ry, qx, qe, TransferOptions(method=method, **OPTIONS))
            out[f"{method} (transferred)"] = macro_f1(qy, t["transferred_type"])
            out[f"{method} (cell_type)"] = macro_f1(qy, t["cell_type"])
            out[f"{method} Unknown share"] = float((t["cell_type"] == "Unknown").mean())
            if method == "ensemble":
                for a in ALPHAS:
                    call = np.where(t["unknown_score"].to_numpy() > 1 - a, "Unknown", t["transferred_type"].to_numpy())
                    out[f"ensemble @{a}"] = macro_f1(qy, call)
        rows.append(out)
        print(f"  {s.name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items() if k != "seed"), flush=True)
    print(f"  {s.name} mean: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in rows[0] if k != "seed"), flush=True)
    keys = [k for k in rows[0] if k != "seed"]
    return {"n_genes": len(s.genes), "per_seed": rows,
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def information_ceiling(rx, ry, qx, seed) -> dict:
    """How well the panel's genes could flag each type at all (benchmark 4's ceiling columns).

    * ``query_proba[t]``: an *oracle* allowed the left-out type's labels - logistic regression on
      log-normalised expression fitted on the whole reference half, every type included - gives
      each query cell P(t); its AUROC for "cell of t" against the other query cells bounds what
      any detector working from these genes can reach (a detector that never saw ``t`` can only
      do worse than one that did). Benchmark 4 also ranks the left-out cells against only the query
      cells of the type most of them are called (``oracle_auroc_vs_called``, and ours,
      ``auroc_unknown_score_vs_called``): the hard part of the ranking, where the genes may not
      separate the two types even for the oracle.
    * ``recall[t]`` / ``confusion[t][u]``: 5-fold cross-validated predictions of the same model
      on the reference half: the share of ``t``'s cells called ``t``, and called ``u`` - how much
      of ``t`` is indistinguishable from ``u`` on this panel (what a missing ``t`` called ``u``
      has to stand out against).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from napari_cellama.core.classify import log_normalise

    xr, xq = log_normalise(rx), log_normalise(qx)
    lr = LogisticRegression(max_iter=10000)
    proba = lr.fit(xr, ry).predict_proba(xq)
    cats = [str(c) for c in lr.classes_]
    cv = cross_val_predict(LogisticRegression(max_iter=10000), xr, ry,
                           cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    y = np.asarray(ry).astype(str)
    cv = np.asarray(cv).astype(str)
    recall, confusion = {}, {}
    for t in cats:
        m = y == t
        recall[t] = float((cv[m] == t).mean())
        confusion[t] = {u: float((cv[m] == u).mean()) for u in cats if u != t}
    return {"query_proba": {t: proba[:, i] for i, t in enumerate(cats)}, "recall": recall, "confusion": confusion}


def leave_one_out(s, seeds) -> dict:
    from sklearn.metrics import roc_auc_score

    from napari_cellama.core.transfer_options import TransferOptions

    out = []
    for seed, split in s.splits(seeds):
        rx, re_, ry, qx, qe, qy = cap_reference(split, seed)
        ceiling = information_ceiling(rx, ry, qx, seed)
        for drop in DROPS:
            keep = ry != drop
            t = head_table(rx[keep], re_[keep], ry[keep], qx, qe, TransferOptions(**OPTIONS))
            miss = qy == drop
            score = t["unknown_score"].to_numpy()
            row = {"seed": seed, "dropped": drop, "n_missing": int(miss.sum()),
                   "auroc_unknown_score": float(roc_auc_score(miss, score)),
                   "auroc_1_minus_confidence": float(roc_auc_score(miss, 1 - t["confidence"].to_numpy())),
                   "missing_unknown_default": float((t["cell_type"][miss] == "Unknown").mean()),
                   "present_unknown_default": float((t["cell_type"][~miss] == "Unknown").mean()),
                   "missing_called_as": t["transferred_type"][miss].value_counts().head(3).to_dict()}
            called = next(iter(row["missing_called_as"]), "")
            row["oracle_auroc"] = float(roc_auc_score(miss, ceiling["query_proba"][drop]))
            pair = miss | (np.asarray(qy) == called)  # the left-out cells and the cells of the type they are called
            row["oracle_auroc_vs_called"] = float(roc_auc_score(miss[pair], ceiling["query_proba"][drop][pair]))
            row["auroc_unknown_score_vs_called"] = float(roc_auc_score(miss[pair], score[pair]))
            row["called_type"] = called
            row["ref_cv_recall"] = ceiling["recall"][drop]
            row["ref_cv_confusion"] = ceiling["confusion"][drop].get(called, 0.0)
            for a in ALPHAS:
                row[f"missing_unknown@{a}"] = float((score[miss] > 1 - a).mean())
                row[f"present_unknown@{a}"] = float((score[~miss] > 1 - a).mean())
            out.append(row)
            print(f"  LOTO {s.name} seed {seed} -{drop}: AUROC {row['auroc_unknown_score']:.3f} "
                  f"[ceiling: oracle {row['oracle_auroc']:.3f}, vs {called} {row['oracle_auroc_vs_called']:.3f} "
                  f"(ours {row['auroc_unknown_score_vs_called']:.3f}), ref. CV recall {row['ref_cv_recall']:.2f}, "
                  f"-> {called} {row['ref_cv_confusion']:.2f}] "
                  f"(1-conf {row['auroc_1_minus_confidence']:.3f}); Unknown: missing {row['missing_unknown_default']:.2f}, "
                  f"present {row['present_unknown_default']:.3f}; called {row['missing_called_as']}", flush=True)
    return {"rows": out}


def print_tables(results: dict) -> None:
    acc = results.get("accuracy", {})
    if acc:
        cols = ["knn k=1", "knn k=10", "logistic regression (expression)", "head (transferred)",
                "ensemble (transferred)", "ensemble (cell_type)", "ensemble Unknown share"]
        print("\nmacro-F1, mean over seeds (benchmark 3: one query)\n")
        print("| setting | genes | " + " | ".join(cols) + " | ensemble - LR |")
        print("|---" * (len(cols) + 3) + "|")
        for name, e in acc.items():
            m = e["mean"]
            diff = m["ensemble (cell_type)"] - m["logistic regression (expression)"]
            print(f"| {name} | {e['n_genes']} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + f" | {diff:+.3f} |")
    for name, e in results.get("loto", {}).items():
        rows = e["rows"]
        print(f"\nleave-one-type-out on {name} (mean over seeds), default alpha {results['default_alpha']}\n")
        print("| removed | AUROC unknown_score | ceiling: oracle AUROC | vs the called type: ours / oracle | "
              "ceiling: ref. CV recall | "
              "ref. CV share called as in LOTO | AUROC 1-confidence | missing -> Unknown | present -> Unknown | "
              + " | ".join(f"missing/present @{a}" for a in ALPHAS) + " |")
        print("|---" * (9 + len(ALPHAS)) + "|")
        for drop in DROPS + ("mean",):
            sel = rows if drop == "mean" else [r for r in rows if r["dropped"] == drop]
            def f(k, sel=sel):
                return np.mean([r[k] for r in sel])
            print(f"| {drop} | {f('auroc_unknown_score'):.3f} | {f('oracle_auroc'):.3f} | "
                  f"{f('auroc_unknown_score_vs_called'):.3f} / {f('oracle_auroc_vs_called'):.3f} | "
                  f"{f('ref_cv_recall'):.2f} | "
                  f"{f('ref_cv_confusion'):.2f} | {f('auroc_1_minus_confidence'):.3f} | "
                  f"{f('missing_unknown_default'):.2f} | {f('present_unknown_default'):.3f} | "
                  + " | ".join(f"{f(f'missing_unknown@{a}'):.2f} / {f(f'present_unknown@{a}'):.3f}" for a in ALPHAS) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="b1,b2,b3,b4")
    p.add_argument("--panel-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-cluster-evidence", action="store_true",
                   help="the unknown score from each cell alone (TransferOptions(unknown_clusters=False))")
    p.add_argument("--detection", action="store_true",
                   help="count the detection deviance in the query-relative call (TransferOptions(unknown_detection=True))")
    p.add_argument("--coclustering", action="store_true",
                   help="the co-clustering evidence (TransferOptions(unknown_coclustering=True))")
    p.add_argument("--no-coclustering", action="store_true",
                   help="without the co-clustering evidence (TransferOptions(unknown_coclustering=False))")
    p.add_argument("--ref-cap", type=int, default=None,
                   help="composition shift: at most N reference cells per type (seeded sample of the reference half)")
    p.add_argument("--ref-cap-type", default=None, metavar="TYPE",
                   help="with --ref-cap N: cap only this type's reference cells "
                        "(a type rarer in the reference than in the query)")
    p.add_argument("--joint-global-share", action="store_true",
                   help="the co-clustering test against the typical reference share alone (the sixth session's rule)")
    p.add_argument("--relative-max-baseline", type=float, default=None,
                   help="(experiment) RELATIVE_MAX_BASELINE of the query-relative call")
    args = p.parse_args(argv)
    REF_CAP["cap"] = args.ref_cap
    REF_CAP["type"] = args.ref_cap_type
    if args.relative_max_baseline is not None:
        from napari_cellama.core import unknown

        unknown.RELATIVE_MAX_BASELINE = args.relative_max_baseline
    if args.joint_global_share:
        from napari_cellama.core import co_clustering

        co_clustering.BY_TYPE = False
    if args.coclustering or args.no_coclustering:
        OPTIONS["unknown_coclustering"] = bool(args.coclustering)
    if args.detection:
        OPTIONS["unknown_detection"] = True
    if args.no_cluster_evidence:
        OPTIONS["unknown_clusters"] = False
    import _quality_data as Q

    from napari_cellama._constants import DEFAULT_UNKNOWN_ALPHA
    from napari_cellama.core import Embedder
    from napari_cellama.core.transfer_options import TransferOptions

    which = tuple(args.only.split(","))
    t0 = time.perf_counter()
    settings = Q.build(which, panel_seed=args.panel_seed)
    embedder = Embedder(cache=True)
    Q.embed(settings, embedder)
    print(f"embedded {len(settings)} settings in {time.perf_counter() - t0:.0f} s "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    results = {"model": embedder.model_id, "mode": embedder.mode, "default_options": TransferOptions().to_dict(),
               "default_alpha": DEFAULT_UNKNOWN_ALPHA, "options": dict(OPTIONS), "ref_cap": args.ref_cap,
               "joint_global_share": bool(args.joint_global_share), "seeds": list(SEEDS), "panel_seed": args.panel_seed,
               "coarse_mapping": Q.COARSE, "accuracy": {}, "loto": {}}
    for s in settings:
        if ("b4" in which and s.name == "pbmc3k/panel477") or ("b4" in which and "b2" not in which):
            results["loto"][s.name] = leave_one_out(s, SEEDS)
        if s.name.startswith("pbmc68k") and "b1" not in which:
            continue
        if s.name.startswith("pbmc3k/") and "b2" not in which:
            continue
        results["accuracy"][s.name] = evaluate_setting(s, SEEDS)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["loadavg_end"] = os.getloadavg()
    print_tables(results)
    sfx = f"_panelseed{args.panel_seed}" if args.panel_seed else ""
    out = args.out or HERE / "results" / f"quality_transfer{sfx}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
