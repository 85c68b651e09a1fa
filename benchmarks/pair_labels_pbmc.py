"""How many principal components should label the fine-tuning pairs? (issue 7)

On the reference half of the pbmc68k split used by ``finetune_pbmc.py`` (350 cells, seed-0
stratified split), for several numbers of components of the fine-tuning PCA
(:func:`napari_cellama.core.finetune.pca_coordinates`: normalise, log1p, highly variable genes):

* the mean pair label (PCA cosine clipped to [0, 1], before the cross-type zeroing) over all
  pairs of cells of the same type and of different types;
* how well the cosine separates same-type from different-type pairs (ROC AUC);
* leave-one-out 10-nearest-neighbour accuracy in that PCA space.

    python benchmarks/pair_labels_pbmc.py [--pcs 50 30 20 10 5] [--out results/pair_labels_pbmc.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcs", type=int, nargs="+", default=[50, 30, 20, 10, 5])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pair_labels_pbmc.json")
    args = parser.parse_args(argv)

    import anndata as ad
    import scanpy as sc
    from accuracy_pbmc import recover_counts, split
    from sklearn.metrics import roc_auc_score

    from napari_cellama.core.finetune import pca_coordinates
    from napari_cellama.core.transfer import l2_normalise

    a = sc.datasets.pbmc68k_reduced()
    counts, _ = recover_counts(a)
    labels = a.obs["bulk_labels"].astype(str).to_numpy()
    train, _ = split(labels, 0)
    ref = ad.AnnData(X=counts[train], obs=pd.DataFrame({"t": labels[train]}, index=a.obs_names[train]),
                     var=pd.DataFrame(index=a.raw.var_names))
    lab = labels[train]
    same = lab[:, None] == lab[None, :]
    iu = np.triu_indices(len(lab), 1)
    rows = []
    for n_pcs in args.pcs:
        coords, _ = pca_coordinates(ref, 2000, n_pcs, 0)
        z = l2_normalise(coords)
        s = z @ z.T
        cos, is_same = s[iu], same[iu]
        lab_pairs = np.clip(cos, 0.0, 1.0)
        np.fill_diagonal(s, -np.inf)
        nb = np.argsort(-s, axis=1)[:, :10]
        loo = float(np.mean([pd.Series(lab[r]).value_counts().index[0] == lab[i] for i, r in enumerate(nb)]))
        rows.append({"n_pcs": n_pcs, "mean_label_same_type": float(lab_pairs[is_same].mean()),
                     "mean_label_different_type": float(lab_pairs[~is_same].mean()),
                     "auc_same_vs_different": float(roc_auc_score(is_same, cos)),
                     "loo_knn10_accuracy": loo})
    print(f"pbmc68k reference half ({len(lab)} cells, {len(np.unique(lab))} types): pair labels by number of PCs\n")
    print("| PCs | mean label, same type | mean label, different types | AUC same vs different | LOO 10-NN accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n_pcs']} | {r['mean_label_same_type']:.3f} | {r['mean_label_different_type']:.3f} | "
              f"{r['auc_same_vs_different']:.3f} | {r['loo_knn10_accuracy']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": "pbmc68k_reduced, reference half of the seed-0 split",
                                    "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
