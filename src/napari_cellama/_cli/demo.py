"""``napari-cellama demo``: the whole transfer on the built-in demo run, no display needed."""

from __future__ import annotations

import sys

import pandas as pd

from .._constants import CELL_ID, CELL_TYPE, DEFAULT_N_NEIGHBORS, DEFAULT_TOP_K, TRANSFER_COLUMNS
from ._common import StderrProgress, write_csv
from ._embedding import embedder_from_args

NAME = "demo"
HELP = "generate the demo Xenium run (once, cached) and transfer labels to it from its reference"


def add_arguments(p) -> None:
    p.add_argument("--out", default=None, metavar="OUT.csv",
                   help="per-cell CSV (default: transfer.csv inside the demo's cache folder)")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="sentence-transformers model")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    p.add_argument("--neighbors", type=int, default=DEFAULT_N_NEIGHBORS, metavar="K")


def run(args) -> None:
    from ..core import run_transfer
    from ..datasets import make_demo
    from ..io import read_query, read_reference
    from ..io.destinations import check_destination

    if args.out:  # before the demo is built
        check_destination(args.out, "output CSV")
    demo = make_demo()
    print(f"demo run: {demo.xenium_dir}\ndemo reference: {demo.reference_h5ad}", file=sys.stderr)
    out = check_destination(args.out or demo.root / "transfer.csv", "output CSV")
    query, reference = read_query(demo.xenium_dir), read_reference(demo.reference_h5ad)
    progress = StderrProgress()
    try:
        result = run_transfer(query, reference, "cell_type", top_k=args.top_k, k=args.neighbors,
                              embedder=embedder_from_args(args), callback=progress)
    finally:
        progress.close()
    table = result.table.loc[:, list(TRANSFER_COLUMNS)]
    table.index.name = CELL_ID
    write_csv(out, table, float_format="%.6g")
    truth = pd.read_csv(demo.truth_csv, index_col=CELL_ID)[CELL_TYPE].astype(str)
    acc = (table[CELL_TYPE].reindex(truth.index).astype(str) == truth).mean()
    print(result.panel.summary(), file=sys.stderr)
    print(f"accuracy against the planted truth: {acc:.3f} ({len(truth)} cells)", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
