"""``napari-cellama prototypes``: reference-free annotation by the nearest marker prototype."""

from __future__ import annotations

import sys

from .._constants import (
    CELL_ID,
    DEFAULT_MARKERS,
    DEFAULT_PROTOTYPE_CELL_GENES,
    DEFAULT_PROTOTYPE_RANK,
    DEFAULT_PROTOTYPE_TEMPERATURE,
    DEFAULT_PROTOTYPE_TOP_K,
    PROTOTYPE_CELL_GENES,
    PROTOTYPE_RANKS,
    SIMILARITY_GAP,
    TRANSFER_COLUMNS,
)
from ._common import StderrProgress, output_path, write_csv
from ._embedding import add_cache_argument, add_mode_argument, embedder_from_args

NAME = "prototypes"
HELP = ("annotate a query without a reference: each cell gets the cell type whose marker sentence "
        "('Top genes are M1, M2, ...') is nearest to its own sentence")


def add_arguments(p) -> None:
    p.add_argument("query", help="query: .h5ad file or Xenium output folder")
    p.add_argument("--markers", default=DEFAULT_MARKERS, metavar="FILE",
                   help="marker table: CSV (cell_type,gene), JSON {type: [genes]} or GMT; "
                        f"'{DEFAULT_MARKERS}' (the default) uses the table shipped with napari-cellama")
    p.add_argument("--top-k", type=int, default=DEFAULT_PROTOTYPE_TOP_K,
                   help=f"genes per cell sentence (default {DEFAULT_PROTOTYPE_TOP_K})")
    p.add_argument("--cell-genes", choices=PROTOTYPE_CELL_GENES, default=DEFAULT_PROTOTYPE_CELL_GENES,
                   help="genes a cell sentence may name: the table's markers or all genes of the panel "
                        f"(default {DEFAULT_PROTOTYPE_CELL_GENES})")
    p.add_argument("--rank", choices=PROTOTYPE_RANKS, default=DEFAULT_PROTOTYPE_RANK,
                   help="gene order in a cell sentence: 'scaled' = by expression above the gene's mean over all "
                        f"cells (z-score), 'expression' = by the value (default {DEFAULT_PROTOTYPE_RANK})")
    p.add_argument("--max-markers", type=int, default=None, metavar="N",
                   help="use at most the first N markers of each type (default: all in the panel)")
    p.add_argument("--temperature", type=float, default=DEFAULT_PROTOTYPE_TEMPERATURE,
                   help=f"softmax temperature of the confidence (default {DEFAULT_PROTOTYPE_TEMPERATURE})")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="cells below this confidence become Unassigned (default 0)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model name or folder, e.g. a fine-tuned model (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face Hub")
    add_mode_argument(p)
    add_cache_argument(p)
    p.add_argument("--out", required=True, metavar="OUT.csv",
                   help="per-cell CSV: " + ",".join((CELL_ID,) + TRANSFER_COLUMNS + (SIMILARITY_GAP,)))


def from_args(args):
    """The :class:`~napari_cellama.core.options.PrototypeOptions` of the command line (checked)."""
    from ..core.options import PrototypeOptions

    return PrototypeOptions(top_k=args.top_k, cell_genes=args.cell_genes, rank=args.rank,
                            max_markers=args.max_markers, temperature=args.temperature,
                            min_confidence=args.min_confidence)


def run(args) -> None:
    from ..core import annotate_by_prototypes, read_markers
    from ..io import read_query
    from ..validators import check_file

    out = output_path(args.out, "output CSV", sources=[args.query])
    options = from_args(args)
    markers = read_markers(args.markers)  # a bad marker file fails before the query is read
    check_file(args.query, "query")
    print(f"reading query {args.query}", file=sys.stderr)
    query = read_query(args.query)
    embedder = embedder_from_args(args)
    progress = StderrProgress()
    try:
        result = annotate_by_prototypes(query, markers, options, embedder=embedder, callback=progress)
    finally:
        progress.close()
    print(result.marker_set.summary(), file=sys.stderr)
    if result.unassigned_note():
        print(result.unassigned_note(), file=sys.stderr)
    table = result.table.loc[:, list(TRANSFER_COLUMNS) + [SIMILARITY_GAP]]
    table.index.name = CELL_ID
    write_csv(out, table, float_format="%.6g")
    counts = table.iloc[:, 0].value_counts()
    print("cells per type: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    print(f"wrote {len(table)} cells to {out} (model {embedder.model_id})", file=sys.stderr)
