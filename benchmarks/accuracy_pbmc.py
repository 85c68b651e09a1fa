"""Label-transfer accuracy of napari-cellama on scanpy's pbmc68k_reduced.

What it measures (issue #2, "Evidence"):

* data: ``scanpy.datasets.pbmc68k_reduced()`` (700 PBMCs x 765 genes, label ``bulk_labels``).
  Its ``.raw.X`` is log-normalised; counts are recovered per cell with ``expm1`` followed
  by a rescale that makes the cell's smallest non-zero value 1, then rounded. How close the
  rescaled values were to integers is checked and printed.
* split: stratified 50/50 (``sklearn.model_selection.train_test_split(stratify=labels,
  random_state=0)``); the first half is the labelled reference, the second the query.
* gene sets: all 765 genes, and the query restricted to the 10x Xenium Human Multi-Tissue
  panel (``Xenium_hMulti_v1_metadata.csv``, column ``Gene``), which is what a Xenium run
  measures; the reference keeps all genes and :func:`napari_cellama.core.shared_panel`
  restricts both to the shared genes, exactly as in a real transfer.
* methods: (a) CELLama with ``k=1`` (the paper's setting), (b) CELLama with the package
  default ``DEFAULT_N_NEIGHBORS`` (distance-weighted vote), (c) logistic regression on
  log-normalised expression (``normalize_total(1e4)`` + ``log1p``), the classical baseline,
  and a majority-class baseline. All CELLama rows use top-k 20 and ``Embedder()`` (the
  offline default model).
* ablation (a*): ``k=1`` with the sentence rule of the CELLama authors' reference code
  (plain ``argsort`` of each cell's values, so zero-count genes fill sentences of cells with
  fewer than ``top_k`` detected genes, ties fall in numpy's unstable order, and two-gene
  sentences read ``Top genes are A, and B.``), embedded with the same model: it separates
  the effect of the sentence rule from the effect of the model.
* k sweep: ``k`` in 1, 3, 5, 10, 15, 20, 30 on the seed-0 split, and mean +- sd over
  ``--repeats`` stratified splits (seeds 0..repeats-1). A cell's sentence depends only on
  its own expression over the gene set, so every cell is embedded once per gene set and the
  embeddings are reused by every split and every ``k``.

Run from the repository root::

    python benchmarks/accuracy_pbmc.py            # ~2-4 minutes on 2 CPU cores

It prints markdown tables and writes ``benchmarks/results/accuracy_pbmc.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
DEFAULT_PANEL = Path(os.environ.get("CELLAMA_SHARED_DATA", HERE.parent.parent / "shared" / "data")) / (
    "panels/Xenium_hMulti_v1_metadata.csv"
)
if not DEFAULT_PANEL.exists():
    DEFAULT_PANEL = Path("/work/shared/data/panels/Xenium_hMulti_v1_metadata.csv")
LABEL = "bulk_labels"
TOP_K = 20
K_SWEEP = (1, 3, 5, 10, 15, 20, 30)
PAPER = {"accuracy": 0.723, "macro_f1": 0.567}  # CELLama authors' code, k=1, all genes
PAPER_LOGREG = {"accuracy": 0.846, "macro_f1": 0.662}


# --------------------------------------------------------------------------- data
def recover_counts(adata):
    """Integer counts from the log-normalised ``.raw.X`` of pbmc68k_reduced.

    Returns the counts (CSR float32) and a dict describing how integer-like the
    rescaled values were before rounding. ``.raw.X`` stores ``log1p`` values rounded to
    3 decimals, so a value ``v`` is known to +-0.0005 and the recovered count ``c`` to
    about ``+-0.0005 * (c + 1) / m`` plus the error of the cell's minimum ``m``; the
    check compares every deviation from the nearest integer with that bound.
    """
    raw = sp.csr_matrix(adata.raw.X, dtype=np.float64)
    expm = raw.copy()
    expm.data = np.expm1(expm.data)
    row = np.repeat(np.arange(raw.shape[0]), np.diff(raw.indptr))
    pos = expm.data > 0
    cell_min = np.full(raw.shape[0], np.inf)
    np.minimum.at(cell_min, row[pos], expm.data[pos])
    scaled = expm.data / cell_min[row]
    rounded = np.round(scaled)
    dev = np.abs(scaled - rounded)
    # propagated rounding error of the stored 3-decimal log values (value and cell minimum)
    half_ulp = 0.0005
    bound = half_ulp * (expm.data + 1) / cell_min[row] + scaled * half_ulp * (cell_min[row] + 1) / cell_min[row]
    check = {
        "stored_decimals": 3,
        "max_abs_deviation": float(dev.max()),
        "max_relative_deviation": float((dev / rounded.clip(min=1)).max()),
        "fraction_within_0.01": float((dev < 0.01).mean()),
        "fraction_within_0.05": float((dev < 0.05).mean()),
        "all_within_rounding_bound": bool((dev <= bound + 1e-9).all()),
        "min_count": float(rounded[pos].min()),
        "max_count": float(rounded.max()),
    }
    counts = sp.csr_matrix((rounded.astype(np.float32), raw.indices.copy(), raw.indptr.copy()), shape=raw.shape)
    counts.eliminate_zeros()
    return counts, check


def load_panel(path: Path) -> list[str]:
    table = pd.read_csv(path)
    if "Gene" not in table.columns:
        raise SystemExit(f"{path} has no 'Gene' column")
    return table["Gene"].astype(str).str.strip().tolist()


def lognorm(x: sp.csr_matrix) -> sp.csr_matrix:
    """``normalize_total(target_sum=1e4)`` + ``log1p`` (scanpy), on a copy."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(X=x.astype(np.float32).copy())
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    return sp.csr_matrix(a.X)


def split(labels: np.ndarray, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=0.5, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


# --------------------------------------------------------------------------- sentences
def authors_rule_sentences(x, genes, top_k: int) -> list[str]:
    """Sentences built the way the CELLama authors' reference code builds them.

    Per cell: ``argsort(-values)[:top_k]`` over all genes (numpy's default, unstable
    sort), zero-count genes included when fewer than ``top_k`` are detected, and the
    template ``Top genes are {all but last joined by ', '}, and {last}.``.
    """
    dense = x.toarray() if sp.issparse(x) else np.asarray(x)
    genes = np.asarray(genes, dtype=object)
    out = []
    for row in dense:
        top = genes[np.argsort(-row)[:top_k]].tolist()
        if len(top) > 1:
            out.append("Top genes are {}, and {}.".format(", ".join(top[:-1]), top[-1]))
        else:
            out.append(f"Top gene is {top[0]}.")
    return out


def gene_set_data(counts, var_names, obs, labels, gene_set, panel_path, top_k):
    """Shared-panel restriction of one gene set, checked on the seed-0 split.

    Returns the restricted counts of all cells, the shared genes, the panel report of
    the seed-0 split and the package's sentences of all cells.
    """
    import anndata as ad

    from napari_cellama.core import cell_sentences, shared_panel

    full = ad.AnnData(X=counts, obs=obs.copy(), var=pd.DataFrame(index=pd.Index(var_names)))
    if gene_set == "all genes":
        query_all = full
    else:
        panel = {g.upper() for g in load_panel(panel_path)}
        keep = [g for g in var_names if g.strip().upper() in panel]
        query_all = full[:, keep].copy()
    # every cell, restricted the way a transfer restricts it
    q_all, r_all, _ = shared_panel(query_all, full, top_k)
    genes = list(r_all.var_names)
    sentences = cell_sentences(r_all.X, genes, top_k)
    if cell_sentences(q_all.X, genes, top_k) != sentences:
        raise AssertionError("query-side and reference-side sentences of the same cells differ")
    # the seed-0 split through the real chain: query = test cells (gene set), reference = train cells (all genes)
    train, test = split(labels, 0)
    q, r, report = shared_panel(query_all[test].copy(), full[train].copy(), top_k)
    if list(q.var_names) != genes:
        raise AssertionError("shared genes of the split differ from those of all cells")
    if cell_sentences(q.X, genes, top_k) != [sentences[i] for i in test]:
        raise AssertionError("split query sentences differ from the per-cell sentences")
    if cell_sentences(r.X, genes, top_k) != [sentences[i] for i in train]:
        raise AssertionError("split reference sentences differ from the per-cell sentences")
    return r_all.X, genes, report, sentences


# --------------------------------------------------------------------------- evaluation
def scores(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def knn_predict(emb, labels, train, test, k):
    from napari_cellama._constants import CELL_TYPE
    from napari_cellama.core import knn_transfer

    table = knn_transfer(emb[test], emb[train], labels[train], k=k)
    return table[CELL_TYPE].to_numpy()


def logreg_predict(x_lognorm, labels, train, test, max_iter):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=max_iter)
    clf.fit(x_lognorm[train], labels[train])
    return clf.predict(x_lognorm[test])


def majority_predict(labels, train, test):
    values, counts = np.unique(labels[train], return_counts=True)
    return np.full(len(test), values[np.argmax(counts)], dtype=object)


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# --------------------------------------------------------------------------- output
def fmt(x: float) -> str:
    return f"{x:.3f}"


def pm(m: float, s: float) -> str:
    return f"{m:.3f} ± {s:.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panel", type=Path, default=DEFAULT_PANEL, help="Xenium panel CSV (column Gene)")
    parser.add_argument("--repeats", type=int, default=20, help="stratified splits for the mean +- sd columns")
    parser.add_argument("--logreg-max-iter", type=int, default=10000)
    parser.add_argument("--skip-authors-rule", action="store_true", help="skip the (a*) ablation (saves ~1,400 embeddings)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "accuracy_pbmc.json")
    args = parser.parse_args(argv)

    import scanpy as sc

    from napari_cellama._constants import DEFAULT_N_NEIGHBORS
    from napari_cellama.core import Embedder

    t_start = time.perf_counter()
    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs[LABEL].astype(str).to_numpy(dtype=object)
    var_names = [str(g) for g in adata.raw.var_names]
    counts, count_check = recover_counts(adata)
    print(
        f"pbmc68k_reduced: {adata.n_obs} cells x {len(var_names)} genes (.raw), label {LABEL!r}, "
        f"{len(np.unique(labels))} classes"
    )
    print(
        "counts recovered from .raw (expm1, per-cell rescale to min 1, round): "
        f"max |value - nearest integer| {count_check['max_abs_deviation']:.4f} "
        f"(max relative {count_check['max_relative_deviation']:.1e}); "
        f"{count_check['fraction_within_0.01']:.2%} of non-zeros within 0.01 of an integer; "
        f"every deviation within the error propagated from the 3-decimal log values stored in .raw: "
        f"{'yes' if count_check['all_within_rounding_bound'] else 'NO'} -> "
        f"{'integer-like' if count_check['all_within_rounding_bound'] else 'NOT integer-like'}"
    )

    embedder = Embedder()
    seeds = list(range(args.repeats))
    splits = {s: split(labels, s) for s in seeds}
    train0, test0 = splits[0]
    print(f"split seed 0: reference {len(train0)} cells, query {len(test0)} cells (stratified 50/50)")

    ks = sorted(set(K_SWEEP) | {1, DEFAULT_N_NEIGHBORS})
    results: dict = {
        "dataset": "scanpy.datasets.pbmc68k_reduced",
        "label_key": LABEL,
        "top_k": TOP_K,
        "default_k": DEFAULT_N_NEIGHBORS,
        "split": "sklearn train_test_split(test_size=0.5, stratify=bulk_labels, random_state=seed)",
        "repeats": args.repeats,
        "count_recovery": count_check,
        "reference_values": {"cellama_authors_k1_all_genes": PAPER, "logistic_regression_all_genes": PAPER_LOGREG},
        "gene_sets": {},
    }
    for gene_set in ("all genes", "Xenium hMulti panel"):
        x_set, genes, report, sentences = gene_set_data(
            counts, var_names, adata.obs, labels, gene_set, args.panel, TOP_K
        )
        n_unique = len(set(sentences))
        print(f"\n[{gene_set}] {report.summary().replace(chr(10), '; ')}")
        t0 = time.perf_counter()
        emb = embedder.encode(sentences)
        t_emb = time.perf_counter() - t0
        print(
            f"[{gene_set}] embedded {len(sentences)} sentences ({n_unique} distinct) in {t_emb:.1f} s "
            f"with {embedder.model_id}"
        )
        entry = {
            "n_genes": len(genes),
            "panel_report": report.to_dict(),
            "n_sentences": len(sentences),
            "n_distinct_sentences": n_unique,
            "embed_seconds": round(t_emb, 2),
            "median_genes_per_sentence": float(np.median([s.count(",") + 1 for s in sentences])),
            "example_sentence": sentences[int(test0[0])],
        }
        # k sweep on every split (embeddings reused)
        sweep = {k: [scores(labels[te], knn_predict(emb, labels, tr, te, k)) for tr, te in splits.values()] for k in ks}
        entry["knn"] = {
            str(k): {
                "seed0": sweep[k][0],
                "accuracy_mean_sd": mean_sd([r["accuracy"] for r in sweep[k]]),
                "macro_f1_mean_sd": mean_sd([r["macro_f1"] for r in sweep[k]]),
                "macro_f1_per_split": [r["macro_f1"] for r in sweep[k]],
                "accuracy_per_split": [r["accuracy"] for r in sweep[k]],
            }
            for k in ks
        }
        # logistic regression on log-normalised expression of the same genes
        x_ln = lognorm(x_set)
        t0 = time.perf_counter()
        lr = [scores(labels[te], logreg_predict(x_ln, labels, tr, te, args.logreg_max_iter)) for tr, te in splits.values()]
        entry["logreg_seconds"] = round(time.perf_counter() - t0, 2)
        entry["logreg"] = {
            "seed0": lr[0],
            "accuracy_mean_sd": mean_sd([r["accuracy"] for r in lr]),
            "macro_f1_mean_sd": mean_sd([r["macro_f1"] for r in lr]),
        }
        maj = [scores(labels[te], majority_predict(labels, tr, te)) for tr, te in splits.values()]
        entry["majority"] = {
            "seed0": maj[0],
            "accuracy_mean_sd": mean_sd([r["accuracy"] for r in maj]),
            "macro_f1_mean_sd": mean_sd([r["macro_f1"] for r in maj]),
        }
        if not args.skip_authors_rule:
            authors = authors_rule_sentences(x_set, genes, TOP_K)
            t0 = time.perf_counter()
            emb_a = embedder.encode(authors)
            t_a = time.perf_counter() - t0
            print(f"[{gene_set}] embedded {len(authors)} authors'-rule sentences in {t_a:.1f} s")
            ar = [scores(labels[te], knn_predict(emb_a, labels, tr, te, 1)) for tr, te in splits.values()]
            entry["authors_rule_k1"] = {
                "seed0": ar[0],
                "accuracy_mean_sd": mean_sd([r["accuracy"] for r in ar]),
                "macro_f1_mean_sd": mean_sd([r["macro_f1"] for r in ar]),
                "n_sentences_changed": int(sum(a != b for a, b in zip(authors, sentences))),
                "example_sentence": authors[int(test0[0])],
            }
        results["gene_sets"][gene_set] = entry

    results["model"] = embedder.model_id
    results["embedding_mode"] = getattr(embedder, "mode", "exact")
    results["device"] = embedder.device
    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    results["machine"] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    _versions(results)
    print_tables(results, ks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out} ({results['seconds_total']} s in total)")
    return 0


def _versions(results: dict) -> None:
    import importlib.metadata as md

    results["versions"] = {
        p: md.version(p)
        for p in ("napari-cellama", "numpy", "scikit-learn", "scanpy", "torch", "sentence-transformers")
    }


def print_tables(results: dict, ks) -> None:
    default_k = results["default_k"]
    n_rep = results["repeats"]
    print(f"\nmodel: {results['model']} (device {results['device']}, mode {results.get('embedding_mode', 'exact')}); "
          f"top-k {results['top_k']}; "
          f"query = half of the cells (seed 0); mean ± sd over {n_rep} stratified 50/50 splits (seeds 0..{n_rep - 1})\n")
    print(f"| gene set | method | accuracy | macro-F1 | accuracy (mean ± sd, {n_rep} splits) | macro-F1 (mean ± sd) |")
    print("|---|---|---|---|---|---|")
    for gs, e in results["gene_sets"].items():
        name = f"{gs} ({e['n_genes']})"
        rows = [
            ("(a) CELLama k=1 (paper's setting)", e["knn"]["1"]),
            (f"(b) CELLama k={default_k}, distance-weighted (default)", e["knn"][str(default_k)]),
            ("(c) logistic regression, log-normalised", e["logreg"]),
            ("majority class", e["majority"]),
        ]
        if "authors_rule_k1" in e:
            rows.insert(2, ("(a*) k=1, authors' sentence rule (ablation)", e["authors_rule_k1"]))
        for label, r in rows:
            print(
                f"| {name} | {label} | {fmt(r['seed0']['accuracy'])} | {fmt(r['seed0']['macro_f1'])} | "
                f"{pm(*r['accuracy_mean_sd'])} | {pm(*r['macro_f1_mean_sd'])} |"
            )
    print(f"| all genes | CELLama authors' code, k=1 (reported) | {fmt(PAPER['accuracy'])} | {fmt(PAPER['macro_f1'])} | | |")
    print(f"| all genes | logistic regression (reported) | {fmt(PAPER_LOGREG['accuracy'])} | "
          f"{fmt(PAPER_LOGREG['macro_f1'])} | | |")

    for gs, e in results["gene_sets"].items():
        print(f"\nk sweep, {gs} ({e['n_genes']} genes): seed-0 split, then mean ± sd over {n_rep} splits; "
              f"'wins vs k={default_k}' = splits where macro-F1 is higher / equal / lower than with k={default_k}\n")
        print(f"| k | accuracy (seed 0) | macro-F1 (seed 0) | accuracy (mean ± sd) | macro-F1 (mean ± sd) | "
              f"macro-F1 - k={default_k} (paired, mean ± sd) | wins vs k={default_k} |")
        print("|---|---|---|---|---|---|---|")
        base = np.asarray(e["knn"][str(default_k)]["macro_f1_per_split"])
        best_k, best_m = None, -1.0
        for k in ks:
            r = e["knn"][str(k)]
            f1s = np.asarray(r["macro_f1_per_split"])
            diff = f1s - base
            wins = f"{int((diff > 1e-12).sum())}/{int((np.abs(diff) <= 1e-12).sum())}/{int((diff < -1e-12).sum())}"
            print(
                f"| {k} | {fmt(r['seed0']['accuracy'])} | {fmt(r['seed0']['macro_f1'])} | "
                f"{pm(*r['accuracy_mean_sd'])} | {pm(*r['macro_f1_mean_sd'])} | {diff.mean():+.3f} ± {diff.std(ddof=1) if len(diff) > 1 else 0.0:.3f} | {wins} |"
            )
            if r["macro_f1_mean_sd"][0] > best_m:
                best_k, best_m = k, r["macro_f1_mean_sd"][0]
        e["best_k_by_mean_macro_f1"] = best_k
        print(f"\nbest k by mean macro-F1 ({gs}): {best_k} ({best_m:.3f}); default k={default_k} "
              f"({e['knn'][str(default_k)]['macro_f1_mean_sd'][0]:.3f})")


if __name__ == "__main__":
    sys.exit(main())
