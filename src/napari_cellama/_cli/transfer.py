"""``napari-cellama transfer``: label transfer from a reference to a query."""

from __future__ import annotations

import sys

from .._constants import CELL_ID, DEFAULT_N_NEIGHBORS, DEFAULT_TOP_K, TRANSFER_COLUMNS
from ._common import StderrProgress, output_path, write_atomic

NAME = "transfer"
HELP = "transfer cell-type labels from a labelled scRNA reference (.h5ad) to a query (.h5ad or Xenium folder)"


def add_arguments(p) -> None:
    p.add_argument("query", help="query: .h5ad file or Xenium output folder")
    p.add_argument("--reference", required=True, metavar="REF.h5ad", help="labelled reference .h5ad")
    p.add_argument("--label-key", required=True, metavar="KEY", help="column of the reference's obs to transfer")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"genes per sentence (default {DEFAULT_TOP_K})")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model name or folder (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--neighbors", type=int, default=DEFAULT_N_NEIGHBORS, metavar="K",
                   help=f"reference neighbours that vote (default {DEFAULT_N_NEIGHBORS}; 1 = the paper)")
    p.add_argument("--metadata", nargs="+", default=None, metavar="COL", help="obs columns appended to sentences")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="cells below this vote share become Unassigned (default 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face Hub")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="per-cell CSV: " + ",".join((CELL_ID,) + TRANSFER_COLUMNS))


def run(args) -> None:
    from ..core import Embedder, run_transfer
    from ..io import read_query, read_reference

    from ..validators import check_file

    out = output_path(args.out, "output CSV")
    check_file(args.reference, "reference", suffixes=(".h5ad",))
    check_file(args.query, "query")
    print(f"reading query {args.query}", file=sys.stderr)
    query = read_query(args.query)
    reference = read_reference(args.reference)
    print(f"query: {query.n_obs} cells x {query.n_vars} genes; reference: {reference.n_obs} cells", file=sys.stderr)
    embedder = Embedder(args.model, device=args.device, allow_download=args.allow_download)
    progress = StderrProgress()
    try:
        result = run_transfer(
            query, reference, args.label_key, top_k=args.top_k, k=args.neighbors, metadata=args.metadata,
            embedder=embedder, min_confidence=args.min_confidence, callback=progress,
        )
    finally:
        progress.close()
    print(result.panel.summary(), file=sys.stderr)
    table = result.table.loc[:, list(TRANSFER_COLUMNS)]
    table.index.name = CELL_ID
    write_atomic(out, lambda tmp: table.to_csv(tmp, float_format="%.6g"))
    print(f"wrote {len(table)} cells to {out} (model {embedder.model_id})", file=sys.stderr)
