"""Do niche clusters recover the demo's planted neighbourhoods? (issue 5 evidence)

Usage::

    python benchmarks/niche_demo_ari.py [--cell-type TYPE] [--max-cells 400] [--neighbors 10]

For a cell type that the demo run (:func:`napari_cellama.datasets.make_demo`)
plants in two or more neighbourhoods (``truth_csv`` column ``niche``), the cells
of that type are clustered three times, with the TRUE cell types as neighbour
labels:

* ``genes+niche``  gene sentence + neighbour types (the method),
* ``niche``        neighbour types only,
* ``genes``        gene sentence only (no niche information: the baseline).

Each sentence set is embedded once; its embeddings are then clustered with KMeans
(k = the number of planted niches of that type) and with Leiden at several
resolutions. The table gives the adjusted Rand index against the planted niches
and the number of clusters found. The row ``composition`` clusters the raw
neighbour-type fractions (no text, no model) with the same KMeans: the ceiling
that the k-nearest neighbourhood itself allows.

``--cell-type all`` repeats the KMeans comparison for every type planted in two
or more niches (one line per type; embeds every cell of those types three times).
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from napari_cellama._constants import CELL_ID, CELL_TYPE
from napari_cellama.core import Embedder, cluster_embeddings, run_niches
from napari_cellama.datasets import make_demo
from napari_cellama.io import read_query

MODES = ("genes+niche", "niche", "genes")
RESOLUTIONS = (0.1, 0.3, 0.5, 1.0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell-type", default=None,
                   help="default: the type planted in the most niches; 'all': every type planted in >= 2 niches")
    p.add_argument("--max-cells", type=int, default=400, help="cells of that type embedded (random sample)")
    p.add_argument("--neighbors", type=int, default=None, help="spatial neighbours (default 10)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    demo = make_demo()
    query = read_query(demo.xenium_dir)
    truth = pd.read_csv(demo.truth_csv, dtype=str).set_index(CELL_ID).reindex(query.obs_names.astype(str))
    per_type = truth.groupby(CELL_TYPE)["niche"].agg(["nunique", "size"])
    multi = per_type[per_type["nunique"] >= 2].sort_values(["nunique", "size"], ascending=False)
    print(f"demo: {demo.xenium_dir} ({query.n_obs} cells); cell types planted in >= 2 niches:")
    for t, row in multi.iterrows():
        niches = truth.loc[truth[CELL_TYPE] == t, "niche"].value_counts()
        print(f"  {t}: {row['size']} cells in {row['nunique']} niches ({', '.join(f'{k} {v}' for k, v in niches.items())})")
    embedder = Embedder()
    if args.cell_type == "all":
        all_types(query, truth, multi, embedder, args)
        return
    cell_type = args.cell_type or str(multi.index[0])
    n_niches = int(per_type.loc[cell_type, "nunique"])
    print(f"\nclustering {cell_type} (at most {args.max_cells} cells), neighbour labels = true cell types\n")

    rows = []
    for mode in MODES:
        t0 = time.perf_counter()
        r = run_niches(query, truth[CELL_TYPE], [cell_type], k=args.neighbors, mode=mode, n_clusters=n_niches,
                       embedder=embedder, max_cells=args.max_cells)
        sec = time.perf_counter() - t0
        planted = truth.loc[r.table.index, "niche"]
        rows.append((mode, f"kmeans k={n_niches}", adjusted_rand_score(planted, r.clusters), len(r.sizes), sec))
        for res in RESOLUTIONS:
            cl = cluster_embeddings(r.embeddings, "leiden", resolution=res)
            rows.append((mode, f"leiden res={res}", adjusted_rand_score(planted, cl), len(cl.categories), None))
    comp = KMeans(n_niches, n_init=10, random_state=0).fit_predict(r.cell_composition.to_numpy())
    rows.append(("composition", f"kmeans k={n_niches}", adjusted_rand_score(planted, comp), n_niches, None))
    print(f"{'sentence':<13}{'clustering':<18}{'ARI':>7}{'clusters':>10}{'run s':>8}")
    for mode, how, ari, n, sec in rows:
        print(f"{mode:<13}{how:<18}{ari:>7.3f}{n:>10}{'' if sec is None else f'{sec:.1f}':>8}")
    print(f"\n(n = {len(r.table)} cells; planted niches: {n_niches}; ARI 1 = perfect, 0 = chance)")


def all_types(query, truth, multi, embedder, args) -> None:
    print("\nKMeans (k = planted niches of the type), neighbour labels = true cell types\n")
    print(f"{'cell type':<20}{'cells':>6}{'niches':>7}{'genes+niche':>13}{'niche':>8}{'genes':>8}{'composition':>13}")
    for cell_type, row in multi.iterrows():
        n = int(row["nunique"])
        aris = []
        for mode in MODES:
            r = run_niches(query, truth[CELL_TYPE], [cell_type], k=args.neighbors, mode=mode, n_clusters=n,
                           embedder=embedder, max_cells=args.max_cells)
            aris.append(adjusted_rand_score(truth.loc[r.table.index, "niche"], r.clusters))
        comp = KMeans(n, n_init=10, random_state=0).fit_predict(r.cell_composition.to_numpy())
        aris.append(adjusted_rand_score(truth.loc[r.table.index, "niche"], comp))
        print(f"{cell_type:<20}{len(r.table):>6}{n:>7}{aris[0]:>13.3f}{aris[1]:>8.3f}{aris[2]:>8.3f}{aris[3]:>13.3f}")


if __name__ == "__main__":
    main()
