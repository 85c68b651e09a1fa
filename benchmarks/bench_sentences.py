"""Throughput of cell-sentence generation (``napari_cellama.core.cell_sentences``).

Cases:

* **Xenium, 377 genes**: the real 84,518-cell human bone-marrow section
  (``/work/shared/data/xenium_bone_marrow``, read with ``napari_cellama.io.read_query``),
  restricted to the 377 genes of the 10x hMulti v1 panel and stacked 4 times vertically
  (338,072 cells, sparse CSR), top-k 20. Target (issue #2): >= 300,000 cells/s.
* **pbmc68k dense, 765 genes**: counts recovered from ``pbmc68k_reduced().raw`` (see
  ``accuracy_pbmc.py``), as a dense float32 array stacked 50 times (35,000 cells); dense
  input is converted to CSR block by block inside ``cell_sentences``.

Each case is timed as the median of ``--runs`` runs (default 3). A straightforward per-cell
Python implementation (dense row, one stable ``argsort`` per cell over the genes in symbol
order, ``str.join``) runs on a 20,000-cell random subset of the section; the script checks that both give identical sentences, on the panel's column
order and on a randomly permuted column order (so that ties are broken by gene symbol, not
by column position), and prints the speed ratio. The per-cell implementation also runs on
the stacked pbmc array.

Run from the repository root::

    python benchmarks/bench_sentences.py          # ~1 minute on 2 CPU cores

The CPU is shared, so the load average is printed with the results; results are also
written to ``benchmarks/results/bench_sentences.json``.
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
sys.path.insert(0, str(HERE))

from accuracy_pbmc import recover_counts  # same count recovery as the accuracy benchmark

SHARED = Path(os.environ.get("CELLAMA_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
if not (SHARED / "xenium_bone_marrow").exists():
    SHARED = Path("/work/shared/data")
TOP_K = 20
TARGET = 300_000


def naive_sentences(x, genes, top_k: int = TOP_K) -> list[str]:
    """Per-cell reference implementation of the documented rule (one Python iteration per cell).

    Columns are put in gene-symbol order once; per cell the row is made dense, one stable
    ``argsort`` of the negated values orders genes by value descending and, among equal
    values, by symbol; zero counts are dropped and the sentence is joined as text.
    """
    from napari_cellama._constants import NO_GENES_SENTENCE

    order = np.argsort(np.asarray(genes, dtype=object).astype(str), kind="stable")
    names = [str(genes[i]) for i in order]
    x = sp.csr_matrix(x)[:, order]
    x.sort_indices()
    out = []
    g = x.shape[1]
    for i in range(x.shape[0]):
        row = np.zeros(g, dtype=np.float64)
        s, e = x.indptr[i], x.indptr[i + 1]
        row[x.indices[s:e]] = x.data[s:e]
        idx = np.argsort(-row, kind="stable")[:top_k]
        top = [names[j] for j in idx if row[j] > 0]
        if not top:
            out.append(NO_GENES_SENTENCE)
        elif len(top) == 1:
            out.append(f"Top gene is {top[0]}.")
        elif len(top) == 2:
            out.append(f"Top genes are {top[0]} and {top[1]}.")
        else:
            out.append("Top genes are " + ", ".join(top[:-1]) + ", and " + top[-1] + ".")
    return out


def timed(fn, runs: int):
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times, result


def check_identical(x, genes, top_k, label: str) -> dict:
    """Vectorised vs per-cell sentences on ``x`` with the given column order; also timed."""
    from napari_cellama.core import cell_sentences

    t0 = time.perf_counter()
    naive = naive_sentences(x, genes, top_k)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = cell_sentences(x, genes, top_k)
    t_fast = time.perf_counter() - t0
    mismatch = [i for i, (a, b) in enumerate(zip(naive, fast)) if a != b]
    ok = len(naive) == len(fast) and not mismatch
    print(f"  identical sentences ({label}, {x.shape[0]:,} cells): {'yes' if ok else 'NO'}"
          + ("" if ok else f" - {len(mismatch)} differ, e.g. cell {mismatch[0]}:\n    {naive[mismatch[0]]}\n    {fast[mismatch[0]]}"))
    return {"label": label, "n_cells": x.shape[0], "identical": ok, "n_mismatch": len(mismatch),
            "naive_seconds": t_naive, "vectorised_seconds": t_fast}


def tie_stats(x, top_k) -> dict:
    """How often the tie rule matters: cells whose top-k cut or order involves equal values."""
    x = sp.csr_matrix(x)
    n_tied = 0
    for i in range(x.shape[0]):
        d = x.data[x.indptr[i]:x.indptr[i + 1]]
        d = d[d > 0]
        if len(d) > 1 and len(np.unique(d)) < len(d):
            n_tied += 1
    return {"cells_with_tied_values": n_tied, "n_cells": x.shape[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xenium", type=Path, default=SHARED / "xenium_bone_marrow")
    parser.add_argument("--panel", type=Path, default=SHARED / "panels" / "Xenium_hMulti_v1_metadata.csv")
    parser.add_argument("--copies", type=int, default=4, help="vertical copies of the section (4 -> 338,072 cells)")
    parser.add_argument("--pbmc-copies", type=int, default=50)
    parser.add_argument("--subset", type=int, default=20_000, help="cells for the per-cell Python comparison")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_sentences.json")
    args = parser.parse_args(argv)

    from napari_cellama.core import cell_sentences, top_genes
    from napari_cellama.io import read_query

    load_start = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}; load average at start {load_start[0]:.2f}")

    # ---------------------------------------------------------------- Xenium, 377 genes
    t0 = time.perf_counter()
    adata = read_query(args.xenium)
    t_read = time.perf_counter() - t0
    panel = pd.read_csv(args.panel)["Gene"].astype(str).str.strip().tolist()
    genes = [g for g in panel if g in set(adata.var_names)]
    sub = adata[:, genes]
    x1 = sp.csr_matrix(sub.X, dtype=np.float32)
    x = sp.vstack([x1] * args.copies, format="csr")
    nnz_cell = x1.nnz / x1.shape[0]
    print(f"\nXenium section {args.xenium} read in {t_read:.1f} s: {adata.n_obs:,} cells x {adata.n_vars} genes; "
          f"hMulti panel genes present: {len(genes)} of {len(panel)}; {nnz_cell:.1f} detected genes per cell (mean)")
    print(f"stacked x{args.copies}: {x.shape[0]:,} cells x {x.shape[1]} genes, CSR float32, nnz {x.nnz:,}")

    rows = []
    med, times, sentences = timed(lambda: cell_sentences(x, genes, TOP_K), args.runs)
    med_rank, _, _ = timed(lambda: top_genes(x, TOP_K, genes), args.runs)
    n = x.shape[0]
    n_genes_in = np.array([0 if s.startswith("No genes") else s.split(".")[0].count(",") + 1 for s in sentences[: x1.shape[0]]])
    rows.append({
        "case": f"Xenium bone marrow x{args.copies}", "cells": n, "genes": len(genes), "input": "CSR",
        "seconds_median": med, "seconds_runs": times, "cells_per_s": n / med,
        "rank_only_seconds_median": med_rank, "rank_only_cells_per_s": n / med_rank,
        "mean_genes_per_sentence": float(n_genes_in.mean()),
    })
    print(f"cell_sentences: median {med:.3f} s of {args.runs} ({', '.join(f'{t:.3f}' for t in times)}) "
          f"-> {n / med:,.0f} cells/s; ranking alone (top_genes) {n / med_rank:,.0f} cells/s; "
          f"mean {n_genes_in.mean():.1f} genes per sentence")
    print(f"example: {sentences[int(np.argmax(n_genes_in))]}")

    # per-cell Python comparison on a random subset
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(x1.shape[0], size=min(args.subset, x1.shape[0]), replace=False))
    xs = x1[pick]
    ties = tie_stats(xs, TOP_K)
    print(f"\nper-cell Python vs vectorised on {len(pick):,} random cells of the section "
          f"({ties['cells_with_tied_values']:,} of them have tied values, so the tie rule decides their order):")
    checks = [check_identical(xs, genes, TOP_K, "panel column order")]
    perm = rng.permutation(len(genes))
    checks.append(check_identical(xs[:, perm], [genes[i] for i in perm], TOP_K, "randomly permuted columns"))
    med_naive, times_naive, _ = timed(lambda: naive_sentences(xs, genes, TOP_K), args.runs)
    med_fast_sub, _, _ = timed(lambda: cell_sentences(xs, genes, TOP_K), args.runs)
    rows.append({
        "case": "Xenium subset, per-cell Python", "cells": len(pick), "genes": len(genes), "input": "CSR",
        "seconds_median": med_naive, "seconds_runs": times_naive, "cells_per_s": len(pick) / med_naive,
    })
    rows.append({
        "case": "Xenium subset, vectorised", "cells": len(pick), "genes": len(genes), "input": "CSR",
        "seconds_median": med_fast_sub, "cells_per_s": len(pick) / med_fast_sub,
    })
    ratio = (len(pick) / med_fast_sub) / (len(pick) / med_naive)
    print(f"  per-cell Python {len(pick) / med_naive:,.0f} cells/s, vectorised {len(pick) / med_fast_sub:,.0f} cells/s "
          f"on the same cells: ratio {ratio:.0f}x; vectorised on {n:,} cells: {n / med:,.0f} cells/s "
          f"= {(n / med) / (len(pick) / med_naive):.0f}x the per-cell Python rate")

    # ---------------------------------------------------------------- pbmc dense
    import scanpy as sc

    pb = sc.datasets.pbmc68k_reduced()
    counts, _ = recover_counts(pb)
    pgenes = [str(g) for g in pb.raw.var_names]
    dense1 = counts.toarray().astype(np.float32)
    dense = np.vstack([dense1] * args.pbmc_copies)
    pchecks = [check_identical(dense1, pgenes, TOP_K, "pbmc68k dense, 765 genes")]
    med_p, times_p, _ = timed(lambda: cell_sentences(dense, pgenes, TOP_K), args.runs)
    med_pn, times_pn, _ = timed(lambda: naive_sentences(dense, pgenes, TOP_K), args.runs)
    rows.append({
        "case": f"pbmc68k dense x{args.pbmc_copies}", "cells": dense.shape[0], "genes": len(pgenes),
        "input": "dense", "seconds_median": med_p, "seconds_runs": times_p, "cells_per_s": dense.shape[0] / med_p,
        "mean_genes_detected": float((dense1 > 0).sum(1).mean()),
    })
    rows.append({
        "case": f"pbmc68k dense x{args.pbmc_copies}, per-cell Python", "cells": dense.shape[0], "genes": len(pgenes),
        "input": "dense", "seconds_median": med_pn, "seconds_runs": times_pn, "cells_per_s": dense.shape[0] / med_pn,
    })

    load_end = os.getloadavg()
    print(f"\nload average at end {load_end[0]:.2f} (2 CPUs shared with other jobs)\n")
    print("| case | cells | genes | input | median s (runs) | cells/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['cells']:,} | {r['genes']} | {r['input']} | {r['seconds_median']:.3f} "
              f"({len(r.get('seconds_runs', [])) or args.runs}) | {r['cells_per_s']:,.0f} |")
    xen = rows[0]["cells_per_s"]
    print(f"\ntarget >= {TARGET:,} cells/s for 377 genes: {'met' if xen >= TARGET else 'NOT met'} ({xen:,.0f} cells/s)")
    print(f"vectorised / per-cell Python (same {len(pick):,} Xenium cells): {ratio:.0f}x; "
          f"pbmc dense (same {dense.shape[0]:,} cells): {med_pn / med_p:.1f}x")
    all_checks = checks + pchecks
    print("identical sentences: " + "; ".join(f"{c['label']}: {'yes' if c['identical'] else 'NO'}" for c in all_checks))

    result = {
        "top_k": TOP_K, "target_cells_per_s": TARGET, "rows": rows, "ratio_vectorised_vs_per_cell": ratio,
        "identity_checks": all_checks, "tie_stats_subset": ties,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "loadavg_start": load_start, "loadavg_end": load_end},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0 if all(c["identical"] for c in all_checks) else 1


if __name__ == "__main__":
    sys.exit(main())
