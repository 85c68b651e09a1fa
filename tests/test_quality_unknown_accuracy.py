"""Accuracy guard of the Unknown call (issue 14) on real labelled cells: the shared pbmc3k
reference restricted to the bone-marrow Xenium panel (458 genes), split 50/50 (seed 0), the real
model, the default transfer (query clusters by Leiden) - benchmark 4's setting. Cells of a type
left out of the reference are called Unknown, cells of present types are not. The previous
(absolute) call made 0% of a missing NK or CD14+ monocyte population Unknown here. Not timed;
the full measurements are benchmarks 3 and 4 of benchmarks/quality_transfer.py (docs/quality.md).
"""

import gzip
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from napari_cellama._constants import CELL_TYPE, TRANSFERRED_TYPE, UNKNOWN, UNKNOWN_SCORE
from napari_cellama.core import Embedder, run_transfer

DATA = Path("/work/shared/data")
PBMC3K = DATA / "references/pbmc3k/pbmc3k.h5ad"
FEATURES = DATA / "xenium_bone_marrow/cell_feature_matrix/features.tsv.gz"
LABEL = "cell_type"

pytestmark = pytest.mark.skipif(not (PBMC3K.exists() and FEATURES.exists()),
                                reason="needs the shared pbmc3k reference and the bone-marrow panel")


@pytest.fixture(scope="module")
def split():
    import anndata as ad

    with gzip.open(FEATURES, "rt") as fh:
        panel = {r[1].upper() for r in (line.rstrip("\n").split("\t") for line in fh) if r[2] == "Gene Expression"}
    a = ad.read_h5ad(PBMC3K)
    a = a[:, [g.upper() in panel for g in a.var_names]].copy()
    ref_idx, q_idx = train_test_split(np.arange(a.n_obs), test_size=0.5, stratify=a.obs[LABEL], random_state=0)
    return a[np.sort(q_idx)].copy(), a[np.sort(ref_idx)].copy()


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """One embedding of the 2,638 cells for the module's three transfers (a fresh cache folder)."""
    return Embedder(cache=tmp_path_factory.mktemp("embeddings"))


def _unknown(table) -> np.ndarray:
    return (table[CELL_TYPE] == UNKNOWN).to_numpy()


@pytest.mark.parametrize("missing", ["NK", "CD14+ Mono"])
def test_cells_of_a_type_the_reference_lacks_are_called_unknown(split, embedder, missing):
    """NK cells are called CD8 T and CD14+ monocytes FCGR3A+ Mono with ordinary per-cell scores;
    their query cluster is explained by the remaining types 4-7 times worse than the typical one."""
    query, ref = split
    table = run_transfer(query, ref[ref.obs[LABEL].astype(str) != missing].copy(), LABEL, embedder=embedder).table
    miss = (query.obs[LABEL].astype(str) == missing).to_numpy()
    unknown = _unknown(table)
    auc = roc_auc_score(miss, table[UNKNOWN_SCORE].to_numpy())
    print(f"{missing} left out: Unknown among missing {unknown[miss].mean():.2f}, present "
          f"{unknown[~miss].mean():.3f}; AUROC {auc:.3f}")
    assert unknown[miss].mean() >= 0.5
    assert unknown[~miss].mean() <= 0.05
    assert auc >= 0.9


def test_a_query_of_reference_types_keeps_its_labels(split, embedder):
    query, ref = split
    table = run_transfer(query, ref, LABEL, embedder=embedder).table
    truth = query.obs[LABEL].astype(str).to_numpy()

    def f1(pred):
        return f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0)

    assert _unknown(table).mean() <= 0.02
    assert f1(table[CELL_TYPE].to_numpy()) >= f1(table[TRANSFERRED_TYPE].to_numpy()) - 0.005
