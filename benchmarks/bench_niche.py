"""Time niche clustering, stage by stage, on a real Xenium section.

Usage::

    python benchmarks/bench_niche.py [XENIUM_DIR] [--labels TRANSFER.csv] \\
        [--cell-types "A,B"] [--max-cells N] [--neighbors K | --radius UM] \\
        [--resolution R | --n-clusters N]

``XENIUM_DIR`` defaults to the 84,518-cell section in
``/work/shared/data/xenium_bone_marrow``. Labels should come from a transfer run
(``napari-cellama transfer ... --out TRANSFER.csv``). Without ``--labels`` the
Xenium run's own graph-based clusters
(``analysis/clustering/gene_expression_graphclust/clusters.csv``) stand in for
cell types, and the output says so. Without ``--cell-types`` the most frequent
label is clustered. ``--max-cells`` clusters a random sample of the selected cells
(their neighbours still come from every cell of the section).

Prints one row per stage: seconds and the items the stage processed. Stages are
timed from the engine's own progress reports (a stage runs from its first report
to the first report of the next stage).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from napari_cellama._cli.niche import read_labels, split_cell_types
from napari_cellama._constants import CELL_ID, CELL_TYPE
from napari_cellama.core import Embedder, cluster_embeddings, run_niches
from napari_cellama.io import read_query

DEFAULT_DATA = Path("/work/shared/data/xenium_bone_marrow")
GRAPHCLUST = Path("analysis/clustering/gene_expression_graphclust/clusters.csv")


class StageTimer:
    """Progress callback recording when each stage starts and how many items it had."""

    def __init__(self):
        self.starts: dict[str, float] = {}
        self.totals: dict[str, int] = {}
        self.order: list[str] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.starts:
            self.starts[stage] = time.perf_counter()
            self.order.append(stage)
        self.totals[stage] = total

    def rows(self, end: float) -> list[tuple[str, float, int]]:
        out = []
        for i, stage in enumerate(self.order):
            stop = self.starts[self.order[i + 1]] if i + 1 < len(self.order) else end
            out.append((stage, stop - self.starts[stage], self.totals[stage]))
        return out


def graphclust_labels(root: Path) -> pd.Series:
    path = root / GRAPHCLUST
    if not path.exists():
        sys.exit(f"no --labels given and {path} does not exist; run `napari-cellama transfer` first")
    df = pd.read_csv(path, dtype=str)
    df.columns = [CELL_ID, CELL_TYPE]
    return df.set_index(CELL_ID)[CELL_TYPE].radd("Cluster ")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("xenium", nargs="?", default=str(DEFAULT_DATA))
    p.add_argument("--labels", default=None, help="transfer CSV (cell_id,cell_type,...)")
    p.add_argument("--cell-types", default=None, help='comma-separated cell types (default: the most frequent label)')
    p.add_argument("--max-cells", type=int, default=None, help="cluster a random sample of at most N selected cells")
    p.add_argument("--neighbors", type=int, default=None)
    p.add_argument("--radius", type=float, default=None)
    p.add_argument("--resolution", type=float, default=None)
    p.add_argument("--n-clusters", type=int, default=None)
    p.add_argument("--niche-only", action="store_true")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    root = Path(args.xenium)
    t0 = time.perf_counter()
    query = read_query(root)
    t_read = time.perf_counter() - t0
    if args.labels:
        labels = read_labels(args.labels)
        source = f"labels: {args.labels}"
    else:
        labels = graphclust_labels(root)
        source = (f"labels: STAND-IN - the Xenium run's graph-based clusters ({GRAPHCLUST}), not a transfer run; "
                  "pass --labels TRANSFER.csv for cell types")
    counts = labels.value_counts()
    cell_types = split_cell_types(args.cell_types, counts.index) if args.cell_types else [str(counts.index[0])]

    embedder = Embedder()
    t0 = time.perf_counter()
    _ = embedder.model
    t_model = time.perf_counter() - t0

    timer = StageTimer()
    t0 = time.perf_counter()
    result = run_niches(
        query, labels, cell_types, k=args.neighbors, radius=args.radius, resolution=args.resolution,
        n_clusters=args.n_clusters, mode="niche" if args.niche_only else "genes+niche", embedder=embedder,
        max_cells=args.max_cells, callback=timer,
    )
    end = time.perf_counter()
    total = end - t0
    # the first clustering call also pays scanpy/umap imports and numba compilation; a second
    # call on the same embeddings shows what re-clustering (e.g. a new resolution) costs
    t1 = time.perf_counter()
    cluster_embeddings(result.embeddings, result.params["method"],
                       resolution=result.params["resolution"] or 1.0, n_clusters=result.params["n_clusters"])
    t_warm = time.perf_counter() - t1

    pr = result.params
    print(f"data: {root} ({query.n_obs} cells x {query.n_vars} genes)")
    print(source)
    print(f"cell types: {', '.join(cell_types)} ({pr['n_of_types']} cells; clustered {pr['n_selected']}"
          f"{' (random sample, --max-cells)' if pr['n_selected'] < pr['n_of_types'] else ''}); "
          f"unlabelled cells (Unassigned neighbours): {pr['n_unlabelled']}")
    hood = f"k={pr['k']}" if pr["k"] is not None else f"radius={pr['radius']} um"
    how = f"resolution {pr['resolution']}" if pr["method"] == "leiden" else f"{pr['n_clusters']} clusters"
    print(f"neighbourhood {hood}; mode {pr['mode']}; {pr['method']} {how}; "
          f"{pr['n_unique_sentences']} unique sentences; model {pr['model']} on {pr['device']}; "
          f"{os.cpu_count()} CPU cores")
    print()
    print(f"{'stage':<22}{'seconds':>10}{'items':>10}")
    print(f"{'read query':<22}{t_read:>10.2f}{query.n_obs:>10}")
    print(f"{'load model':<22}{t_model:>10.2f}{1:>10}")
    for stage, sec, items in timer.rows(end):
        print(f"{stage:<22}{sec:>10.2f}{items:>10}")
    print(f"{'total niche run':<22}{total:>10.2f}")
    print(f"{'re-cluster (warm)':<22}{t_warm:>10.2f}{len(result.table):>10}")
    emb = [r for r in timer.rows(end) if r[0] == "embedding niches"]
    if emb and emb[0][1] > 0:
        print(f"\nembedding throughput: {emb[0][2] / emb[0][1]:.1f} sentences/s")
    print()
    print(result.summary())


if __name__ == "__main__":
    main()
