"""Benchmark 5 of issue 14: the full bone-marrow Xenium section annotated with the pbmc3k reference.

For each method (default ``ensemble``; ``knn`` for comparison) it runs the real chain
(``run_transfer`` on the section read by spatialdata-io; embeddings from the persistent cache
``$NAPARI_CELLAMA_CACHE`` when warm - say so in the table) and prints: wall time, label
counts, ARI of the labels with the run's own graph clusters
(``analysis/clustering/gene_expression_graphclust``), the share of cells called Unknown
(the unknown score uses the graph clusters as its cluster evidence) among cells whose top gene is an erythroid marker vs an immune marker, and the reference fit
report with its flagged clusters and their markers.

    python benchmarks/quality_section.py [--query DIR] [--methods ensemble,knn]

Writes ``benchmarks/results/quality_section.json`` and the fit report CSV beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERY = Path("/work/shared/data/xenium_bone_marrow")
REFERENCE = Path("/work/shared/data/references/pbmc3k/pbmc3k.h5ad")
ERYTHROID = {"SLC4A1", "AHSP", "GYPA", "ALAS2", "HBB", "HBA1", "HEMGN", "TRAK2", "CA1", "GATA1", "KLF1"}
GRANULOCYTIC = {"MPO", "ELANE", "LTF", "CAMP", "S100A8", "S100A9", "S100A12", "MMP8", "MMP9", "CEACAM8", "CTSG",
                "AZU1", "PRTN3", "CRISP3", "ARG1"}
IMMUNE = {"CD3E", "CD3D", "CD2", "IL7R", "CCR7", "CD8A", "MS4A1", "CD79A", "CD19", "CD14", "LYZ",
          "FCGR3A", "NKG7", "GNLY", "CD4"}


def _kinds(table) -> dict:
    """Clusters (and cells) by their first top marker that is erythroid / granulocytic / immune (PBMC), else other."""
    out = {}
    for _, r in table.iterrows():
        genes = [g.strip() for g in str(r["top_markers"]).split(",")]
        kind = next((name for g in genes for name, group in (("erythroid", ERYTHROID), ("granulocytic", GRANULOCYTIC),
                                                             ("immune (PBMC)", IMMUNE)) if g in group), "other")
        k = out.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += int(r["n_cells"])
    return {k: f"{v[0]} clusters, {v[1]} cells" for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--query", type=Path, default=QUERY)
    p.add_argument("--reference", type=Path, default=REFERENCE)
    p.add_argument("--methods", default="ensemble,knn")
    p.add_argument("--time-leiden", action="store_true",
                   help="also time the Leiden clustering a query without graph clusters gets (GUI, h5ad)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "quality_section.json")
    p.add_argument("--no-coclustering", action="store_true", help="TransferOptions(unknown_coclustering=False)")
    args = p.parse_args(argv)
    from sklearn.metrics import adjusted_rand_score

    from napari_cellama.core import Embedder, TransferOptions, reference_fit_report, run_transfer
    from napari_cellama.io import read_query, read_reference
    from napari_cellama.io.xenium import read_xenium_clusters

    t0 = time.perf_counter()
    query = read_query(args.query)
    reference = read_reference(args.reference)
    clusters = read_xenium_clusters(args.query)
    print(f"query {query.n_obs} cells x {query.n_vars} genes; reference {reference.n_obs} cells; "
          f"{clusters.nunique()} graph clusters; read in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {"query": str(args.query), "reference": str(args.reference), "methods": {}}
    for method in args.methods.split(","):
        embedder = Embedder(cache=True)
        t1 = time.perf_counter()
        options = TransferOptions(method=method, unknown_coclustering=not args.no_coclustering)
        res = run_transfer(query, reference, "cell_type", embedder=embedder, options=options, clusters=clusters)
        seconds = time.perf_counter() - t1
        t = res.table
        labels = t["cell_type"].astype(str)
        common = clusters.index.intersection(t.index)
        ari = adjusted_rand_score(clusters.loc[common], labels.loc[common])
        top = t["sentence"].str.extract(r"Top genes? (?:are|is) ([A-Za-z0-9\-]+)")[0]
        ery, imm = top.isin(ERYTHROID).to_numpy(), top.isin(IMMUNE).to_numpy()
        unknown = (labels == "Unknown").to_numpy()
        t2 = time.perf_counter()
        report = reference_fit_report(t, query, clusters, cluster_source="graph clusters")
        report_seconds = time.perf_counter() - t2
        stats = res.params.get("embedding_cache", {})
        entry = {
            "seconds_transfer": round(seconds, 1),
            "seconds_fit_report": round(report_seconds, 1),
            "loadavg": os.getloadavg(),
            "embedding_cache": stats,
            "label_counts": labels.value_counts().to_dict(),
            "ari_graph_clusters": float(ari),
            "median_confidence": float(t["confidence"].median()),
            "n_erythroid_top_gene": int(ery.sum()),
            "erythroid_top_gene_unknown": float(unknown[ery].mean()) if ery.any() else None,
            "erythroid_top_gene_labels": labels[ery].value_counts().head(5).to_dict(),
            "n_immune_top_gene": int(imm.sum()),
            "immune_top_gene_unknown": float(unknown[imm].mean()) if imm.any() else None,
            "flagged_clusters": report.possibly_missing.to_dict(orient="records"),
            "flagged_kind": _kinds(report.possibly_missing),
            "not_flagged_kind": _kinds(report.table[~report.table["possibly_missing"]]),
            "options": res.params.get("options"),
        }
        results["methods"][method] = entry
        csv = args.out.with_name(f"quality_section_fit_{method}.csv")
        report.table.to_csv(csv, index=False, float_format="%.4g")
        print(f"\n[{method}] {seconds:.0f} s transfer (load {os.getloadavg()[0]:.1f}; query "
              f"{stats.get('query', {}).get('unique')} distinct sentences, {stats.get('query', {}).get('cached')} from "
              f"the cache), fit report {report_seconds:.0f} s; ARI with graph clusters {ari:.3f}; "
              f"median confidence {entry['median_confidence']:.2f}")
        print(f"[{method}] labels: {entry['label_counts']}")
        print(f"[{method}] Unknown among cells with an erythroid top gene ({ery.sum()}): "
              f"{entry['erythroid_top_gene_unknown']:.1%}; immune top gene ({imm.sum()}): {entry['immune_top_gene_unknown']:.1%}; "
              f"erythroid-top-gene cells called {entry['erythroid_top_gene_labels']}")
        print(report.summary(max_rows=60))
        print(f"[{method}] flagged clusters by top markers: {entry['flagged_kind']}; "
              f"not flagged: {entry['not_flagged_kind']}")
        print(f"wrote {csv}")
    if args.time_leiden:
        from napari_cellama.core.fit_report import leiden_clusters
        from napari_cellama.core.panel import shared_panel

        q, _, _ = shared_panel(query, reference, 20)
        t3 = time.perf_counter()
        leiden = leiden_clusters(q.X)
        results["leiden_seconds"] = round(time.perf_counter() - t3, 1)
        results["leiden_clusters"] = int(len(leiden.categories))
        print(f"Leiden on the shared panel ({q.n_vars} genes): {results['leiden_clusters']} clusters in "
              f"{results['leiden_seconds']} s (load {os.getloadavg()[0]:.1f}) - added to a transfer without graph clusters")
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
