"""``napari-cellama niche``: niche sentences and niche clustering of chosen cell types."""

from __future__ import annotations

import sys
from pathlib import Path

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    DEFAULT_NICHE_GRAPH_NEIGHBORS,
    DEFAULT_NICHE_MARKERS,
    DEFAULT_NICHE_RESOLUTION,
    DEFAULT_SPATIAL_NEIGHBORS,
    DEFAULT_TOP_K,
    NICHE_CLUSTER,
    NicheMode,
)
from ..validators import (
    CellamaInputError,
    check_at_most_one,
    check_cell_types,
    check_file,
)
from ._common import StderrProgress, write_csv
from ._embedding import add_cache_argument, add_mode_argument, embedder_from_args

NAME = "niche"
HELP = ("cluster chosen cell types by their spatial neighbourhood (niche sentences) and describe each "
        "cluster by its neighbour composition and marker genes")


def add_arguments(p) -> None:
    p.add_argument("query", help="query: .h5ad with obsm['spatial'] (microns) or Xenium output folder")
    p.add_argument("--labels", required=True, metavar="LABELS.csv",
                   help="per-cell labels, e.g. the transfer CSV (columns cell_id,cell_type,...)")
    p.add_argument("--label-key", default=CELL_TYPE, metavar="COLUMN",
                   help=f"column of LABELS.csv with the cell types (default {CELL_TYPE})")
    p.add_argument("--cell-types", default=None, metavar='"A,B"',
                   help="comma-separated cell types to cluster (only their cells are embedded)")
    p.add_argument("--cell-type", action="append", default=None, metavar="TYPE",
                   help="one cell type to cluster, taken verbatim (commas and spaces kept); repeat for more")
    p.add_argument("--cell-types-file", default=None, metavar="FILE.txt",
                   help="cell types to cluster, one per line, taken verbatim")
    p.add_argument("--neighbors", type=int, default=None, metavar="K",
                   help=f"K nearest cells form the niche (default {DEFAULT_SPATIAL_NEIGHBORS})")
    p.add_argument("--radius", type=float, default=None, metavar="UM",
                   help="instead of --neighbors: all cells within UM microns form the niche")
    p.add_argument("--resolution", type=float, default=None,
                   help=f"Leiden resolution (default {DEFAULT_NICHE_RESOLUTION}; higher = more clusters)")
    p.add_argument("--n-clusters", type=int, default=None, metavar="N",
                   help="instead of Leiden: KMeans with N clusters")
    p.add_argument("--niche-only", action="store_true",
                   help="sentences hold only the neighbours' cell types, not the cell's own genes")
    p.add_argument("--genes-only", action="store_true",
                   help="sentences hold only the cell's genes (no-niche baseline, for comparison)")
    p.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="cluster a random sample of at most N cells of those types (a quick look); "
                        "neighbours still come from every cell")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"genes per sentence (default {DEFAULT_TOP_K})")
    p.add_argument("--graph-neighbors", type=int, default=DEFAULT_NICHE_GRAPH_NEIGHBORS, metavar="N",
                   help=f"neighbours per cell in the embedding graph for Leiden (default {DEFAULT_NICHE_GRAPH_NEIGHBORS})")
    p.add_argument("--n-markers", type=int, default=DEFAULT_NICHE_MARKERS, metavar="N",
                   help=f"marker genes per cluster (default {DEFAULT_NICHE_MARKERS})")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model name or folder (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face Hub")
    add_mode_argument(p)
    add_cache_argument(p)
    p.add_argument("--out", required=True, metavar="OUT.csv",
                   help=f"per-cell CSV {CELL_ID},{NICHE_CLUSTER} (the selected cells); OUT.composition.csv and "
                        "OUT.markers.csv are written next to it")


def split_cell_types(text: str, available) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]``; a name that itself contains commas is kept whole if it is a label."""
    text = str(text).strip()
    if text in {str(a) for a in available}:
        return [text]
    return [t.strip() for t in text.split(",") if t.strip()]


def read_labels(path, label_key: str = CELL_TYPE):
    """The label column of a per-cell CSV, as a Series indexed by cell id."""
    import pandas as pd

    p = check_file(path, "labels CSV", suffixes=(".csv", ".csv.gz", ".tsv", ".txt"))
    try:
        sep = "\t" if p.name.lower().endswith((".tsv", ".txt")) else ","
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=True)
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(f"labels CSV {p} could not be read ({type(err).__name__}: {err})") from None
    for col in (CELL_ID, label_key):
        if col not in df.columns:
            raise CellamaInputError(
                f"labels CSV {p} has no {col!r} column (columns: {', '.join(map(str, df.columns[:10]))}); "
                f"give the CSV written by `napari-cellama transfer`" + ("" if col == CELL_ID else " or --label-key")
            )
    return df.set_index(CELL_ID)[label_key]


def sidecar_paths(out: Path) -> tuple[Path, Path]:
    """``OUT.composition.csv`` and ``OUT.markers.csv`` next to ``OUT.csv``."""
    stem = out.name[: -len(".csv")] if out.name.lower().endswith(".csv") else out.name
    return out.with_name(f"{stem}.composition.csv"), out.with_name(f"{stem}.markers.csv")


def from_args(args):
    """The :class:`~napari_cellama.core.options.NicheOptions` of the command line (checked)."""
    from ..core.options import NicheOptions

    check_at_most_one(niche_only=args.niche_only, genes_only=args.genes_only)
    mode = NicheMode.NICHE if args.niche_only else NicheMode.GENES if args.genes_only else NicheMode.GENES_AND_NICHE
    return NicheOptions.from_flags(
        k=args.neighbors, radius=args.radius, resolution=args.resolution, n_clusters=args.n_clusters,
        graph_neighbors=args.graph_neighbors, mode=mode, top_k=args.top_k, n_markers=args.n_markers,
        max_cells=args.max_cells,
    )


def run(args) -> None:
    from ..core import run_niches
    from ..io import read_query

    out = _check_outputs(args)
    options = from_args(args)  # cheap checks first: a bad flag fails before the query is read
    labels = read_labels(args.labels, args.label_key)
    available = labels.dropna().unique()
    cell_types = check_cell_types(chosen_cell_types(args, available), available)
    print(f"reading query {args.query}", file=sys.stderr)
    query = read_query(args.query)
    embedder = embedder_from_args(args)
    progress = StderrProgress()
    try:
        result = run_niches(query, labels, cell_types, options=options, embedder=embedder, callback=progress)
    finally:
        progress.close()
    if result.params["n_unlabelled"]:
        print(f"{result.params['n_unlabelled']} of {query.n_obs} query cells have no label and count as "
              "Unassigned neighbours", file=sys.stderr)
    print(result.summary(), file=sys.stderr)
    comp_path, markers_path = sidecar_paths(out)
    table = result.table[[NICHE_CLUSTER]]
    write_csv(out, table)
    write_csv(comp_path, result.composition_table(), float_format="%.6g")
    write_csv(markers_path, result.markers, index=False, float_format="%.6g")
    print(f"wrote {len(table)} cells to {out}, cluster composition to {comp_path.name}, "
          f"marker genes to {markers_path.name} (model {embedder.model_id})", file=sys.stderr)


def _check_outputs(args):
    """The per-cell CSV and its two sidecars, checked together before any work."""
    from ..io.destinations import check_outputs

    main = check_outputs({"output CSV": args.out}, sources=[args.query, args.labels])["output CSV"]
    comp, markers = sidecar_paths(main)
    check_outputs({"output CSV": main, "composition CSV": comp, "markers CSV": markers},
                  sources=[args.query, args.labels])
    return main


def chosen_cell_types(args, available) -> list[str]:
    """Cell types from ``--cell-types`` (comma-separated), repeated ``--cell-type`` and ``--cell-types-file``."""
    chosen = []
    if args.cell_types:
        chosen += split_cell_types(args.cell_types, available)
    chosen += list(args.cell_type or [])
    if args.cell_types_file:
        p = check_file(args.cell_types_file, "cell-types file")
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError) as err:
            raise CellamaInputError(f"cell-types file {p} could not be read as text ({err}); "
                                    "give a UTF-8 text file with one cell type per line") from None
        chosen += [ln for ln in lines if ln.strip()]
    if not chosen:
        raise CellamaInputError("choose the cell types to cluster: --cell-types \"A,B\", --cell-type A "
                                "(repeatable) or --cell-types-file FILE")
    return chosen
