"""``napari-cellama transfer``: label transfer from a reference to a query."""

from __future__ import annotations

import sys

from .._constants import (
    CELL_ID,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_TOP_K,
    DEFAULT_TRANSFER_METHOD,
    DEFAULT_UNKNOWN_ALPHA,
    TRANSFER_COLUMNS,
    TRANSFER_METHODS,
    UNASSIGNED_REASON,
    UNKNOWN_SCORE,
)
from ._common import StderrProgress, write_csv
from ._embedding import add_cache_argument, add_mode_argument, embedder_from_args, print_surrogate_check

NAME = "transfer"
HELP = "transfer cell-type labels from a labelled scRNA reference (.h5ad) to a query (.h5ad or Xenium folder)"


def add_arguments(p) -> None:
    p.add_argument("query", help="query: .h5ad file or Xenium output folder")
    p.add_argument("--reference", required=True, metavar="REF.h5ad", help="labelled reference .h5ad")
    p.add_argument("--label-key", required=True, metavar="KEY", help="column of the reference's obs to transfer")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"genes per sentence (default {DEFAULT_TOP_K})")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model name or folder (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--method", default=DEFAULT_TRANSFER_METHOD, choices=list(TRANSFER_METHODS),
                   help=f"how labels are chosen: ensemble (embedding head + expression model, default), head "
                        f"(embedding head only) or knn (the paper's cosine kNN vote; no Unknown call) "
                        f"(default {DEFAULT_TRANSFER_METHOD}; see docs/quality.md)")
    p.add_argument("--neighbors", type=int, default=DEFAULT_N_NEIGHBORS, metavar="K",
                   help=f"reference neighbours that vote with --method knn (default {DEFAULT_N_NEIGHBORS}; 1 = the paper)")
    p.add_argument("--unknown-alpha", type=float, default=DEFAULT_UNKNOWN_ALPHA, metavar="A",
                   help=f"cells whose unknown_score exceeds 1 - A become Unknown (type missing from the "
                        f"reference; default {DEFAULT_UNKNOWN_ALPHA}; 0 turns the Unknown call off)")
    p.add_argument("--no-cluster-evidence", action="store_true",
                   help="unknown_score from each cell alone; by default it is the mean of the cell's own score "
                        "and its query cluster's novelty (the Xenium run's graph clusters, else Leiden on "
                        "expression; see docs/quality.md)")
    p.add_argument("--no-coclustering", action="store_true",
                   help="without the co-clustering evidence: by default a query cluster that, clustered together "
                        "with the reference, holds far fewer reference cells than its types predict is a type the "
                        "reference lacks (its atypical cells Unknown; see docs/quality.md)")
    p.add_argument("--fit-report", default=None, metavar="FIT.csv",
                   help="also write the reference fit report per query cluster (the Xenium run's graph "
                        "clusters, else Leiden on expression): size, Unknown and low-confidence shares, "
                        "dominant label, top markers, possibly missing types; beside it FIT_unresolved_pairs.csv: "
                        "the pairs of reference types the shared panel does not tell apart")
    p.add_argument("--metadata", nargs="+", default=None, metavar="COL", help="obs columns appended to sentences")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="cells below this vote share become Unassigned (default 0)")
    p.add_argument("--max-distance", type=float, default=None, metavar="D",
                   help="cells farther than this cosine distance from every reference cell become Unassigned")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face Hub")
    add_mode_argument(p)
    add_cache_argument(p)
    p.add_argument("--max-per-type", type=int, default=None, metavar="N",
                   help="use at most N reference cells of each label (random, seed 0; for large references)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS|local:N",
                   help="embed on Dask distributed workers: a scheduler address (tcp://host:8786) or "
                        "local:N for N local worker processes")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="per-cell CSV: " + ",".join((CELL_ID,) + TRANSFER_COLUMNS))
    p.add_argument("--explorer-csv", default=None, metavar="FILE.csv",
                   help="also write a Xenium Explorer cell-groups CSV (cell_id,group,color)")
    p.add_argument("--zarr", default=None, metavar="DIR.zarr",
                   help="also save the session as SpatialData zarr (cells table, embeddings, colours; "
                        "for a Xenium query also its cell labels and boundaries); never inside the Xenium folder")
    p.add_argument("--h5ad", default=None, metavar="FILE.h5ad",
                   help="also write the cells table (counts, results, embeddings) as .h5ad")
    p.add_argument("--overwrite", action="store_true",
                   help="let --zarr replace a zarr store written by another tool (a store written by "
                        "napari-cellama is always replaced; a folder that is not a zarr store never)")


def run(args) -> None:
    from ..core import run_transfer
    from ..core.transfer_options import TransferOptions
    from ..io import read_query, read_reference
    from ..validators import check_file, check_fraction, check_positive_int, check_top_k

    check_top_k(args.top_k)
    check_fraction(args.min_confidence, "--min-confidence")
    if args.max_distance is not None:
        check_fraction(args.max_distance, "--max-distance", upper=2.0)
    check_fraction(args.unknown_alpha, "--unknown-alpha")
    options = TransferOptions.from_args(args)
    exports = _check_exports(args)
    out = exports.pop("out")
    fit_out = exports.pop("fit_report", None)
    check_file(args.reference, "reference", suffixes=(".h5ad",))
    check_file(args.query, "query")
    if args.max_per_type is not None:
        check_positive_int(args.max_per_type, "--max-per-type")
    embedder = embedder_from_args(args)  # a bad --dask-scheduler fails before reading
    print(f"reading query {args.query}", file=sys.stderr)
    query = read_query(args.query)
    reference = read_reference(args.reference)
    print(f"query: {query.n_obs} cells x {query.n_vars} genes; reference: {reference.n_obs} cells", file=sys.stderr)
    clusters, cluster_source = _query_clusters(args)
    progress = StderrProgress()
    try:
        result = run_transfer(query, reference, args.label_key, embedder=embedder, options=options,
                              callback=progress, clusters=clusters if options.unknown_clusters else None)
    finally:
        progress.close()
        if args.dask_scheduler:
            embedder.close()
    print(result.panel.summary(), file=sys.stderr)
    _print_embedding_stats(result.params)
    print_surrogate_check(result.params)
    columns = list(TRANSFER_COLUMNS) + [c for c in (UNKNOWN_SCORE, UNASSIGNED_REASON, "cluster_novelty",
                                                    "query_cluster") if c in result.table]
    table = result.table.loc[:, columns]
    table.index.name = CELL_ID
    write_csv(out, table, float_format="%.6g")
    print(f"wrote {len(table)} cells to {out} (method {options.method}; model {embedder.model_id}, "
          f"{embedder.mode} mode)", file=sys.stderr)
    _print_label_summary(result.table)
    if fit_out is not None:
        from ..core.fit_report import reference_fit_report

        report = reference_fit_report(result.table, query, clusters, cluster_source=cluster_source,
                                      reference=reference, label_key=args.label_key)
        print(report.summary(), file=sys.stderr)
        write_csv(fit_out, report.table, index=False, float_format="%.4g")
        print(f"wrote the fit report of {len(report.table)} query clusters to {fit_out}", file=sys.stderr)
        pairs_out = resolution_path(fit_out)
        write_csv(pairs_out, report.panel_resolution.pairs, index=False, float_format="%.4g")
        print(f"wrote {len(report.panel_resolution.pairs)} pair(s) of reference types the panel does not tell "
              f"apart to {pairs_out}", file=sys.stderr)
    _write_exports(args, exports, result, query)


def resolution_path(fit_report):
    """Where the panel-resolution pairs are written beside ``--fit-report`` FILE.csv: FILE_unresolved_pairs.csv."""
    from pathlib import Path

    p = Path(fit_report)
    return p.with_name(f"{p.stem}_unresolved_pairs.csv")


def _print_label_summary(table) -> None:
    """How many cells got a reference label, how many are Unknown / Unassigned and why."""
    from .._constants import CELL_TYPE, UNASSIGNED, UNKNOWN

    n = len(table)
    unknown = int((table[CELL_TYPE] == UNKNOWN).sum())
    unassigned = int((table[CELL_TYPE] == UNASSIGNED).sum())
    parts = [f"{n - unknown - unassigned} of {n} cells with a reference label",
             f"{unknown} Unknown ({unknown / max(n, 1):.1%}; type possibly missing from the reference)"]
    if UNASSIGNED_REASON in table:
        for reason, count in table.loc[table[CELL_TYPE] == UNASSIGNED, UNASSIGNED_REASON].value_counts().items():
            parts.append(f"{count} Unassigned ({reason or 'threshold'})")
    print("labels: " + "; ".join(parts), file=sys.stderr)


def _query_clusters(args):
    """The Xenium run's graph clusters (and where they come from), else (None, None): Leiden."""
    from ..io import xenium_root
    from ..io.xenium import read_xenium_clusters

    root = xenium_root(args.query)
    clusters = read_xenium_clusters(root) if root is not None else None
    if clusters is None:
        return None, None
    return clusters, "the Xenium run's graph clusters (analysis/clustering/gene_expression_graphclust)"


def _check_exports(args) -> dict:
    """Check every destination (and that no two collide) before the (long) transfer starts."""
    from ..io.destinations import check_outputs

    names = {"out": "output CSV", "fit_report": "fit report CSV", "explorer_csv": "Xenium Explorer CSV",
             "h5ad": "h5ad file", "zarr": "SpatialData zarr"}
    outputs = {names[k]: getattr(args, k) for k in names}
    if args.fit_report is not None:  # written beside the fit report: it must not replace another output
        outputs["fit report's unresolved pairs CSV"] = resolution_path(args.fit_report)
    checked = check_outputs(outputs, sources=[args.query, args.reference],
                            folders=["SpatialData zarr"], replace_foreign=args.overwrite)
    return {k: checked[v] for k, v in names.items() if v in checked}


def _write_exports(args, paths: dict, result, query) -> None:
    """Write the exports asked for (Xenium Explorer CSV, h5ad, SpatialData zarr)."""
    if not paths:
        return
    from pathlib import Path

    from ..core.provenance import annotation_from_result
    from ..io import write_explorer_csv, write_h5ad, write_spatialdata, xenium_root

    sources = [args.query, args.reference]
    inputs = {"query": Path(args.query).expanduser().resolve(),
              "reference": Path(args.reference).expanduser().resolve()}
    annotation = annotation_from_result(result, dict(inputs, label_key=args.label_key),  # provenance
                                        min_confidence=args.min_confidence, max_distance=args.max_distance)
    n = annotation.n_cells
    if "explorer_csv" in paths:
        write_explorer_csv(paths["explorer_csv"], annotation, sources=sources)
        print(f"wrote Xenium Explorer cell groups of {n} cells to {paths['explorer_csv']}", file=sys.stderr)
    if "h5ad" in paths:
        write_h5ad(paths["h5ad"], annotation, result, query=query, inputs=inputs, sources=sources)
        print(f"wrote {n} cells to {paths['h5ad']}", file=sys.stderr)
    if "zarr" in paths:
        xenium = xenium_root(args.query)
        write_spatialdata(paths["zarr"], annotation, result, query=query, xenium=xenium, inputs=inputs,
                          overwrite=True, sources=sources, replace_foreign=args.overwrite)
        what = "cells table, cell labels and boundaries" if xenium is not None else "cells table"
        print(f"wrote SpatialData ({what}) of {n} cells to {paths['zarr']}", file=sys.stderr)


def _print_embedding_stats(params: dict) -> None:
    """One line: embedding mode and how many unique sentences came from the cache."""
    from .._constants import EMBED_CACHE, EMBED_MODE

    info = params.get(EMBED_CACHE) or {}
    parts = []
    for what in ("reference", "query"):
        st = info.get(what) or {}
        if st:
            parts.append(f"{what} {st.get('unique', 0)} unique sentences ({st.get('cached', 0)} cached, "
                         f"{st.get('embedded', 0)} embedded)")
    where = f"cache {info['folder']}" if info.get("folder") else "no cache"
    print(f"embedding: {params.get(EMBED_MODE)} mode, {where}; " + "; ".join(parts), file=sys.stderr)
