"""Fine-tuning and marker prototypes on scanpy's pbmc68k_reduced (issue 7, "Evidence").

What it measures:

* data and split as in ``accuracy_pbmc.py`` (issue 2): ``pbmc68k_reduced`` (700 PBMCs x 765
  genes, label ``bulk_labels``), counts recovered from ``.raw``, stratified 50/50 split
  with seed 0 - the first half is the labelled reference, the second the query; top-k 20;
* label transfer (``run_transfer``, the real chain, default ``k`` and ``k=1``) with
  (1) the zero-shot model (offline all-MiniLM-L6-v2), (2) that model fine-tuned on the
  reference (``napari_cellama.core.finetune``: PCA-neighbour and random pairs labelled by
  PCA cosine, 0 across ``bulk_labels``) and (3) the same with prototype guidance (extra
  (cell, marker sentence) pairs; markers from the shipped default table, renamed to the
  ``bulk_labels`` names with ``PBMC_TYPES`` below). Accuracy, macro-F1 and the recall of
  the three rarest query types; the fine-tuning runs only ever see the reference half;
* reference-free annotation of the query half by the nearest marker prototype (the ten
  ``bulk_labels`` types of the default table) against a majority-class baseline and
  scanpy's ``score_genes`` marker scoring (``normalize_total`` + ``log1p`` of the counts,
  one score per type with the same markers restricted to the measured genes, argmax);
  also with the whole default table (types outside PBMC count as errors), and with the
  prototype-guided fine-tuned model.

Run from the repository root (long on a shared 2-core CPU: run it in the background)::

    nohup python benchmarks/finetune_pbmc.py > benchmarks/results/finetune_pbmc.log 2>&1 &

It prints markdown tables and writes ``benchmarks/results/finetune_pbmc.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LABEL = "bulk_labels"
TOP_K = 20

PBMC_TYPES = {
    # default-table type -> pbmc68k bulk_labels name
    "CD14+ monocyte": "CD14+ Monocyte",
    "dendritic cell": "Dendritic",
    "B cell": "CD19+ B",
    "regulatory T cell": "CD4+/CD25 T Reg",
    "CD8+ cytotoxic T cell": "CD8+ Cytotoxic T",
    "naive CD8+ T cell": "CD8+/CD45RA+ Naive Cytotoxic",
    "NK cell": "CD56+ NK",
    "memory CD4+ T cell": "CD4+/CD45RO+ Memory",
    "CD34+ progenitor": "CD34+",
    "naive CD4+ T cell": "CD4+/CD45RA+/CD25- Naive T",
}


def scores(truth, pred, rare) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    truth = np.asarray(truth, dtype=object)
    pred = np.asarray(pred, dtype=object)
    out = {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", labels=np.unique(truth), zero_division=0)),
    }
    rec = recall_score(truth, pred, labels=rare, average=None, zero_division=0)
    out["rare_recall"] = {r: float(v) for r, v in zip(rare, rec)}
    return out


GUIDED_PROTOTYPES = "prototypes (10 PBMC types, prototype-guided model; uses reference labels)"


def guided_prototype_scores(runs: list[dict], rare: list[str], seeds: list[int]) -> dict:
    """Reference-free prototype scores with the prototype-guided models, averaged over seeds."""
    pa = [r["prototype_annotation"] for r in runs if "prototype_annotation" in r]
    return {
        "accuracy": float(np.mean([r["accuracy"] for r in pa])),
        "macro_f1": float(np.mean([r["macro_f1"] for r in pa])),
        "rare_recall": {t: float(np.mean([r["rare_recall"][t] for r in pa])) for t in rare},
        "note": f"mean over fine-tuning seeds {seeds}",
    }


def summarise(runs: list[dict], ks: list[str], rare: list[str]) -> dict:
    """Mean and sd over fine-tuning seeds of each score, plus the per-seed values."""
    out: dict = {"per_seed": runs}
    for k in ks:
        acc = [r[k]["accuracy"] for r in runs]
        f1 = [r[k]["macro_f1"] for r in runs]
        out[k] = {
            "accuracy_mean_sd": [float(np.mean(acc)), float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0],
            "macro_f1_mean_sd": [float(np.mean(f1)), float(np.std(f1, ddof=1)) if len(f1) > 1 else 0.0],
            "macro_f1_per_seed": f1,
            "rare_recall_mean": {t: float(np.mean([r[k]["rare_recall"][t] for r in runs])) for t in rare},
        }
    v = [r["finetune"]["validation"] for r in runs]
    out["validation_mean"] = {key: float(np.mean([x[key] for x in v])) for key in v[0]
                              if key.endswith(("_before", "_after"))}
    out["seconds_per_step_mean"] = float(np.mean([r["finetune"]["seconds_per_step"] for r in runs]))
    out["total_steps"] = runs[0]["finetune"]["params"]["total_steps"]
    out["pairs_train"] = sum(runs[0]["finetune"]["pair_counts"]["train"].values())
    return out


def score_genes_predict(counts, genes, markers: dict[str, list[str]]) -> np.ndarray:
    """scanpy ``score_genes`` per type on log-normalised counts, argmax over types."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(X=counts.astype(np.float32).copy(), var=pd.DataFrame(index=pd.Index(genes)))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    types = list(markers)
    s = np.zeros((a.n_obs, len(types)))
    for j, t in enumerate(types):
        sc.tl.score_genes(a, markers[t], score_name="_s", random_state=0)
        s[:, j] = a.obs["_s"].to_numpy()
    return np.asarray(types, dtype=object)[s.argmax(axis=1)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default: the package default)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the package default)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-top-k", type=int, nargs="+", default=None,
                        help="sentence lengths mixed in the training pairs (default: the package default)")
    parser.add_argument("--eval-steps", type=int, default=None,
                        help="validate every N steps and keep the best-validated weights (held-out reference cells)")
    parser.add_argument("--validation", type=float, default=None, help="held-out share of reference cells")
    parser.add_argument("--learning-rate", type=float, default=None, help="(default: the package default)")
    parser.add_argument("--augment", type=int, default=None,
                        help="down-sampled copies per reference cell (default: the package default)")
    parser.add_argument("--augment-keep", type=float, default=None,
                        help="share of counts kept in a copy (default: the package default)")
    parser.add_argument("--pcs", type=int, default=None,
                        help="principal components behind the pair labels (default: the package default)")
    parser.add_argument("--configs", nargs="+", choices=["plain", "guided"], default=["plain", "guided"],
                        help="fine-tuning configurations to run: plain, prototype-guided (default both)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--threads", type=int, default=None, help="threads of torch, OpenMP and BLAS, e.g. 1 per process when runs share the cores "
                             "(default: the libraries' choice)")
    parser.add_argument("--models-dir", type=Path, default=None, help="keep the fine-tuned models here")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "finetune_pbmc.json")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="RESULT.json",
                        help="only combine result files of runs with different --seeds (run in parallel, one "
                             "seed each) into --out and print the tables")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.threads:  # before torch, scanpy or numba start an OpenMP team: every team this size
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        from threadpoolctl import threadpool_limits  # numpy's BLAS was loaded with the module

        threadpool_limits(args.threads)

    import anndata as ad
    import scanpy as sc
    import torch
    from accuracy_pbmc import recover_counts, split

    from napari_cellama._constants import (
        CELL_TYPE,
        DEFAULT_FINETUNE_AUGMENT_KEEP,
        DEFAULT_FINETUNE_AUGMENT_VIEWS,
        DEFAULT_FINETUNE_EPOCHS,
        DEFAULT_FINETUNE_LEARNING_RATE,
        DEFAULT_FINETUNE_PAIRS,
        DEFAULT_FINETUNE_PCS,
        DEFAULT_FINETUNE_TOP_K,
        DEFAULT_N_NEIGHBORS,
    )
    from napari_cellama.core import (
        Embedder,
        annotate_by_prototypes,
        finetune,
        knn_transfer,
        read_markers,
        run_transfer,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    n_pairs = args.pairs or DEFAULT_FINETUNE_PAIRS
    args.epochs = args.epochs or DEFAULT_FINETUNE_EPOCHS
    args.train_top_k = args.train_top_k or list(DEFAULT_FINETUNE_TOP_K)
    t_start = time.perf_counter()
    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs[LABEL].astype(str).to_numpy(dtype=object)
    genes = [str(g) for g in adata.raw.var_names]
    counts, _ = recover_counts(adata)
    full = ad.AnnData(X=counts, obs=adata.obs[[LABEL]].astype({LABEL: str}).copy(),
                      var=pd.DataFrame(index=pd.Index(genes)))
    train, test = split(labels, 0)
    reference, query = full[train].copy(), full[test].copy()
    truth = labels[test]
    q_counts = pd.Series(truth).value_counts()
    rare = list(q_counts.sort_values(kind="stable").index[:3])
    print(f"pbmc68k_reduced: reference {reference.n_obs} cells, query {query.n_obs} cells, {len(genes)} genes; "
          f"rarest query types: {', '.join(f'{r} ({q_counts[r]})' for r in rare)}")

    table = read_markers(None)
    pbmc_markers = {PBMC_TYPES[t]: table[t] for t in PBMC_TYPES}
    results: dict = {
        "dataset": "scanpy.datasets.pbmc68k_reduced",
        "split": "sklearn train_test_split(test_size=0.5, stratify=bulk_labels, random_state=0)",
        "top_k": TOP_K,
        "default_k": DEFAULT_N_NEIGHBORS,
        "rare_types": {r: int(q_counts[r]) for r in rare},
        "n_pairs": n_pairs,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_top_k": args.train_top_k,
        "eval_steps": args.eval_steps,
        "learning_rate": args.learning_rate or DEFAULT_FINETUNE_LEARNING_RATE,
        "augment_views": DEFAULT_FINETUNE_AUGMENT_VIEWS if args.augment is None else args.augment,
        "augment_keep": args.augment_keep or DEFAULT_FINETUNE_AUGMENT_KEEP,
        "n_pcs": args.pcs or DEFAULT_FINETUNE_PCS,
        "transfer": {},
        "finetune": {},
        "reference_free": {},
    }
    models_root = args.models_dir or Path(tempfile.mkdtemp(prefix="cellama_ft_bench_"))
    models_root.mkdir(parents=True, exist_ok=True)

    def progress(stage, done, total):
        if stage == "fine-tuning" and (done % 25 == 0 or done == total):
            print(f"  {stage}: {done}/{total}", flush=True)

    def transfer_rows(name: str, model, store: bool = False) -> dict:
        t0 = time.perf_counter()
        emb = Embedder(model)
        res = run_transfer(query, reference, LABEL, top_k=TOP_K, k=DEFAULT_N_NEIGHBORS, embedder=emb)
        t1 = knn_transfer(res.query_embeddings, res.reference_embeddings, res.reference_labels.to_numpy(), k=1)
        entry = {
            f"k={DEFAULT_N_NEIGHBORS}": scores(truth, res.table.loc[query.obs_names, CELL_TYPE], rare),
            "k=1": scores(truth, t1[CELL_TYPE].to_numpy(), rare),
            "model": emb.model_id,
            "embedding_mode": getattr(emb, "mode", "exact"),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if store:
            results["transfer"][name] = entry
        print(f"[{name}] k={DEFAULT_N_NEIGHBORS}: {entry[f'k={DEFAULT_N_NEIGHBORS}']}; k=1: {entry['k=1']}", flush=True)
        return entry

    # ---- zero-shot
    transfer_rows("zero-shot", None, store=True)

    # ---- reference-free prototypes (zero-shot model), score_genes, majority
    majority = pd.Series(labels[train]).value_counts().index[0]
    results["reference_free"]["majority class"] = scores(truth, np.full(len(truth), majority, dtype=object), rare)
    proto = annotate_by_prototypes(query, pbmc_markers)
    results["reference_free"]["prototypes (10 PBMC types, zero-shot model)"] = scores(
        truth, proto.table.loc[query.obs_names, CELL_TYPE].to_numpy(), rare)
    results["reference_free"]["prototype_params"] = proto.params
    results["reference_free"]["marker_report"] = proto.marker_set.to_dict()
    print(proto.marker_set.summary())
    plain = annotate_by_prototypes(query, pbmc_markers, top_k=TOP_K, cell_genes="all", rank="expression")
    results["reference_free"][f"prototypes, transfer sentences (top {TOP_K} of all genes by value)"] = scores(
        truth, plain.table.loc[query.obs_names, CELL_TYPE].to_numpy(), rare)
    proto_all = annotate_by_prototypes(query, table)
    pred_all = proto_all.table.loc[query.obs_names, CELL_TYPE].map(lambda t: PBMC_TYPES.get(t, f"other: {t}"))
    results["reference_free"][f"prototypes (whole default table, {len(proto_all.types)} types, zero-shot model)"] = (
        scores(truth, pred_all.to_numpy(), rare))
    results["reference_free"]["whole_table_predicted_outside_pbmc"] = {
        str(k): int(v) for k, v in pred_all[pred_all.str.startswith("other: ")].value_counts().items()}
    kept = proto.marker_set.markers
    sg = score_genes_predict(query.X, genes, kept)
    results["reference_free"]["scanpy score_genes (same markers)"] = scores(truth, sg, rare)
    print(f"[reference-free] {json.dumps({k: v for k, v in results['reference_free'].items() if 'accuracy' in v})}",
          flush=True)

    # ---- fine-tuning: every configuration with each fine-tuning seed (pairs, dropout, validation cells)
    configs = {
        "fine-tuned": {},
        "fine-tuned + prototype guidance": {"prototypes": pbmc_markers},
    }
    configs = {k: v for k, v in configs.items() if ("guided" if v else "plain") in args.configs}
    if args.validation is not None:
        configs = {k: {**v, "validation_fraction": args.validation} for k, v in configs.items()}
    for name, extra in configs.items():
        runs = []
        for seed in args.seeds:
            out = models_root / f"{name.replace(' ', '_').replace('+', 'plus')}_seed{seed}"
            print(f"[{name}, seed {seed}] fine-tuning on the reference half -> {out}", flush=True)
            opt = {k: v for k, v in (("learning_rate", args.learning_rate), ("augment_views", args.augment),
                                     ("augment_keep", args.augment_keep), ("n_pcs", args.pcs)) if v is not None}
            ft = finetune(reference, out, label_key=LABEL, top_k=args.train_top_k, n_pairs=n_pairs,
                          epochs=args.epochs, batch_size=args.batch_size, eval_steps=args.eval_steps, seed=seed,
                          overwrite=True, callback=progress, **opt, **extra)
            print(ft.summary(), flush=True)
            entry = transfer_rows(f"{name} (seed {seed})", out)
            entry["finetune"] = {
                "validation": ft.validation,
                "pair_counts": ft.pair_counts,
                "seconds": round(ft.seconds, 1),
                "seconds_per_step": round(ft.seconds / max(1, ft.params["total_steps"]), 2),
                "loss_first": ft.losses[0],
                "loss_last20": float(np.mean(ft.losses[-20:])),
                "params": ft.params,
            }
            if extra.get("prototypes"):
                p2 = annotate_by_prototypes(query, pbmc_markers, model=str(out))
                entry["prototype_annotation"] = scores(truth, p2.table.loc[query.obs_names, CELL_TYPE].to_numpy(), rare)
            runs.append(entry)
        results["finetune"][name] = summarise(runs, [f"k={DEFAULT_N_NEIGHBORS}", "k=1"], rare)
        results["finetune"][name]["seeds"] = list(args.seeds)
        if extra.get("prototypes"):
            results["reference_free"][GUIDED_PROTOTYPES] = guided_prototype_scores(runs, rare, list(args.seeds))

    results["seconds_total"] = round(time.perf_counter() - t_start, 1)
    import importlib.metadata as md

    results["versions"] = {p: md.version(p) for p in ("napari-cellama", "torch", "sentence-transformers", "scanpy")}
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    print_tables(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\nwrote {args.out} ({results['seconds_total']} s in total)")
    return 0


def merge(paths: list[Path], out: Path) -> int:
    """Combine runs that differ only in their fine-tuning seeds (same split, same options)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    results = parts[0]
    rare = list(results["rare_types"])
    ks = [f"k={results['default_k']}", "k=1"]
    names = list(dict.fromkeys(name for part in parts for name in part["finetune"]))
    for name in names:  # a part may hold some configurations only (--configs)
        have = [part["finetune"][name] for part in parts if name in part["finetune"]]
        runs = [r for f in have for r in f["per_seed"]]
        seeds = [s for f in have for s in f["seeds"]]
        results["finetune"][name] = summarise(runs, ks, rare)
        results["finetune"][name]["seeds"] = seeds
        if any("prototype_annotation" in r for r in runs):
            results["reference_free"][GUIDED_PROTOTYPES] = guided_prototype_scores(runs, rare, seeds)
    results["merged_from"] = [str(p) for p in paths]
    results["seconds_total"] = max(part["seconds_total"] for part in parts)
    print_tables(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def print_tables(results: dict) -> None:
    rare = list(results["rare_types"])
    k = f"k={results['default_k']}"
    seeds = results["finetune"][next(iter(results["finetune"]))]["seeds"] if results["finetune"] else []
    used = {r["finetune"]["params"]["pca"]["n_pcs"] for f in results["finetune"].values() for r in f["per_seed"]}
    n_pcs = ", ".join(map(str, sorted(used))) or results.get("n_pcs")  # as the runs recorded it
    print(f"\nlabel transfer, pbmc68k seed-0 split (reference 350 / query 350 cells), top-k {results['top_k']}; "
          f"fine-tuning: {results['n_pairs']} cell pairs (+25% prototype pairs when guided), training sentences "
          f"top-k {results['train_top_k']}, {results['epochs']} epoch(s), batch {results['batch_size']}, "
          f"learning rate {results.get('learning_rate')}, down-sampled copies {results.get('augment_views')} "
          f"(keep {results.get('augment_keep')}), pair labels from {n_pcs} PCs"
          + (f", validated every {results['eval_steps']} steps, best kept" if results.get("eval_steps") else "")
          + f"; fine-tuned rows: mean ± sd over fine-tuning seeds {seeds}\n")
    head = " | ".join(f"recall {r} (n={results['rare_types'][r]})" for r in rare)
    print(f"| model | accuracy ({k}) | macro-F1 ({k}) | gain vs zero-shot | accuracy (k=1) | macro-F1 (k=1) | {head} ({k}) |")
    print("|---|---|---|---|---|---|" + "---|" * len(rare))
    zs = results["transfer"]["zero-shot"]
    rr = " | ".join(f"{zs[k]['rare_recall'][r]:.3f}" for r in rare)
    print(f"| zero-shot | {zs[k]['accuracy']:.3f} | {zs[k]['macro_f1']:.3f} | | {zs['k=1']['accuracy']:.3f} | "
          f"{zs['k=1']['macro_f1']:.3f} | {rr} |")
    for name, e in results["finetune"].items():
        a, b = e[k], e["k=1"]
        gain = a["macro_f1_mean_sd"][0] - zs[k]["macro_f1"]
        rr = " | ".join(f"{a['rare_recall_mean'][r]:.3f}" for r in rare)
        print(f"| {name} | {a['accuracy_mean_sd'][0]:.3f} ± {a['accuracy_mean_sd'][1]:.3f} | "
              f"{a['macro_f1_mean_sd'][0]:.3f} ± {a['macro_f1_mean_sd'][1]:.3f} | {gain:+.3f} | "
              f"{b['accuracy_mean_sd'][0]:.3f} ± {b['accuracy_mean_sd'][1]:.3f} | "
              f"{b['macro_f1_mean_sd'][0]:.3f} ± {b['macro_f1_mean_sd'][1]:.3f} | {rr} |")
    print(f"\nper seed, macro-F1 ({k}):")
    for name, e in results["finetune"].items():
        print(f"  {name}: " + ", ".join(f"{x:.3f}" for x in e[k]["macro_f1_per_seed"]))
    print("\nfine-tuning validation on held-out reference cells (mean over seeds)\n")
    print("| run | pairs (train) | steps | s/step | Spearman before | after | held-out transfer macro-F1 before | after "
          "| prototype accuracy before | after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, e in results["finetune"].items():
        v = e["validation_mean"]
        pa = (f"{v['prototype_accuracy_before']:.3f} | {v['prototype_accuracy_after']:.3f}"
              if "prototype_accuracy_before" in v else " | ")
        print(f"| {name} | {e['pairs_train']} | {e['total_steps']} | {e['seconds_per_step_mean']:.1f} | "
              f"{v['spearman_before']:.3f} | {v['spearman_after']:.3f} | {v['transfer_macro_f1_before']:.3f} | "
              f"{v['transfer_macro_f1_after']:.3f} | {pa} |")
    print("\nreference-free annotation of the query half\n")
    print("| method | accuracy | macro-F1 | " + " | ".join(f"recall {r}" for r in rare) + " |")
    print("|---|---|---|" + "---|" * len(rare))
    for name, e in results["reference_free"].items():
        if "accuracy" not in e:
            continue
        rr = " | ".join(f"{e['rare_recall'][r]:.3f}" for r in rare)
        print(f"| {name} | {e['accuracy']:.3f} | {e['macro_f1']:.3f} | {rr} |")


if __name__ == "__main__":
    sys.exit(main())
